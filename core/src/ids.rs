//! Identifier newtypes. Their `Display` form ("PA7", "PU3", "SU12") is the one used in
//! logs, stats keys and the signaling protocol, so `FromStr` accepts exactly that form.

use std::fmt;
use std::str::FromStr;

/// Error returned when a string is not the canonical form of an id ("PA7", "PU3", "SU12").
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid id {input:?}: expected \"{prefix}\" followed by a decimal number")]
pub struct ParseIdError {
    prefix: &'static str,
    input: String,
}

/// Parses `<prefix><decimal>`; only the canonical form (no sign, no leading zeros) is
/// accepted so that `parse(s).to_string() == s` always holds.
fn parse_prefixed(input: &str, prefix: &'static str) -> Result<u64, ParseIdError> {
    let error = || ParseIdError {
        prefix,
        input: input.to_owned(),
    };
    let digits = input.strip_prefix(prefix).ok_or_else(error)?;
    let canonical = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'));
    if !canonical {
        return Err(error());
    }
    digits.parse().map_err(|_| error())
}

macro_rules! prefixed_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub u64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "{}"), self.0)
            }
        }

        impl FromStr for $name {
            type Err = ParseIdError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                parse_prefixed(s, $prefix).map($name)
            }
        }
    };
}

prefixed_id!(
    /// A participant of a room (a publisher, a subscriber or both).
    ParticipantId,
    "PA"
);
prefixed_id!(
    /// One published track of a participant.
    PublicationId,
    "PU"
);
prefixed_id!(
    /// One subscriber's receipt of one publication.
    SubscriptionId,
    "SU"
);

/// An RTP synchronization incarnation identifier (wire value).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ssrc(pub u32);

impl fmt::Display for Ssrc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn display_uses_prefixes() {
        assert_eq!(ParticipantId(7).to_string(), "PA7");
        assert_eq!(PublicationId(0).to_string(), "PU0");
        assert_eq!(SubscriptionId(12).to_string(), "SU12");
        assert_eq!(Ssrc(4_000_000_000).to_string(), "4000000000");
    }

    #[test]
    fn parses_canonical_form_only() {
        assert_eq!("PA7".parse::<ParticipantId>(), Ok(ParticipantId(7)));
        assert_eq!("PU0".parse::<PublicationId>(), Ok(PublicationId(0)));
        assert_eq!(
            "SU18446744073709551615".parse::<SubscriptionId>(),
            Ok(SubscriptionId(u64::MAX))
        );
        for bad in [
            "",
            "PA",
            "PU7",
            "pa7",
            "PA+7",
            "PA-7",
            "PA07",
            "PA 7",
            "PA7 ",
            "PA1a",
            "PA18446744073709551616",
        ] {
            assert!(
                bad.parse::<ParticipantId>().is_err(),
                "{bad:?} must not parse"
            );
        }
    }

    #[test]
    fn parse_error_message_is_lowercase_and_names_the_input() {
        let Err(err) = "X1".parse::<SubscriptionId>() else {
            panic!("X1 must not parse as a subscription id");
        };
        assert_eq!(
            err.to_string(),
            "invalid id \"X1\": expected \"SU\" followed by a decimal number"
        );
    }

    proptest! {
        #[test]
        fn display_round_trips(n in any::<u64>()) {
            prop_assert_eq!(ParticipantId(n).to_string().parse::<ParticipantId>(), Ok(ParticipantId(n)));
            prop_assert_eq!(PublicationId(n).to_string().parse::<PublicationId>(), Ok(PublicationId(n)));
            prop_assert_eq!(SubscriptionId(n).to_string().parse::<SubscriptionId>(), Ok(SubscriptionId(n)));
        }

        #[test]
        fn whatever_parses_displays_back_identically(s in "(PU)?[0-9+ -]{0,22}") {
            if let Ok(id) = s.parse::<PublicationId>() {
                prop_assert_eq!(id.to_string(), s);
            }
        }
    }
}
