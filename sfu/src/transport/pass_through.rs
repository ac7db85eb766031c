//! The queue between an interceptor's `handle_*` and `poll_*`, sized for the usual case.
//!
//! A connection's interceptor chain hands each interceptor its messages one at a time and
//! polls them out at once, so a queue nearly always holds one message. A `VecDeque` of them
//! allocates room for four the first time (a `TaggedPacket` is 224 bytes: 896 bytes) and
//! keeps it for the life of the connection, twice per interceptor; Sluice's own interceptors
//! on a subscriber leg would hold about 14 KiB that way. This queue keeps its first message
//! inline and spills to the heap only while more wait (a NACK answered with several
//! retransmissions), giving that memory back once they have gone.

use std::collections::VecDeque;

/// A first-in, first-out queue whose oldest message waits inline; see the module
/// documentation.
#[derive(Debug)]
pub(crate) struct PassThrough<T> {
    /// The oldest message, unless `more` holds every waiting one.
    first: Option<T>,
    more: VecDeque<T>,
}

impl<T> Default for PassThrough<T> {
    fn default() -> Self {
        Self {
            first: None,
            more: VecDeque::new(),
        }
    }
}

impl<T> PassThrough<T> {
    pub(crate) fn push_back(&mut self, message: T) {
        if self.first.is_none() && self.more.is_empty() {
            self.first = Some(message);
        } else {
            self.more.push_back(message);
        }
    }

    pub(crate) fn pop_front(&mut self) -> Option<T> {
        if let Some(first) = self.first.take() {
            return Some(first);
        }
        let next = self.more.pop_front();
        if next.is_some() && self.more.is_empty() {
            self.more = VecDeque::new();
        }
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_leave_in_the_order_they_came() {
        let mut queue = PassThrough::default();
        queue.push_back(1);
        queue.push_back(2);
        assert_eq!(queue.pop_front(), Some(1));
        queue.push_back(3);
        queue.push_back(4);
        assert_eq!(queue.pop_front(), Some(2));
        queue.push_back(5);
        let rest: Vec<i32> = std::iter::from_fn(|| queue.pop_front()).collect();
        assert_eq!(rest, vec![3, 4, 5]);
        queue.push_back(6);
        assert_eq!(queue.pop_front(), Some(6));
        assert_eq!(queue.pop_front(), None);
    }

    #[test]
    fn one_message_at_a_time_never_allocates_and_a_burst_gives_its_memory_back() {
        let mut queue = PassThrough::default();
        for message in 0..100 {
            queue.push_back(message);
            assert_eq!(queue.pop_front(), Some(message));
        }
        assert_eq!(queue.more.capacity(), 0);
        for message in 0..10 {
            queue.push_back(message);
        }
        assert!(queue.more.capacity() >= 9);
        while queue.pop_front().is_some() {}
        assert_eq!(queue.more.capacity(), 0);
    }
}
