//! [`Layer`]: a spatial and a temporal layer, the unit subscribers ask for and receive.

use std::fmt;

/// A simulcast spatial layer (0 = the lowest resolution) and, within it, a temporal layer
/// (0 = base frames only; the top one, 2 with VP8 L1T3, = every frame). Ordered spatial first,
/// then temporal: the order of the allocator's ladder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Layer {
    /// The spatial layer.
    pub spatial: u8,
    /// The temporal layer within it.
    pub temporal: u8,
}

impl Layer {
    /// No limit: the highest spatial and temporal layer there is.
    pub const MAX: Layer = Layer {
        spatial: u8::MAX,
        temporal: u8::MAX,
    };

    /// `spatial` at `temporal`.
    pub const fn new(spatial: u8, temporal: u8) -> Self {
        Layer { spatial, temporal }
    }
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "S{}T{}", self.spatial, self.temporal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordered_spatial_first_then_temporal() {
        assert!(Layer::new(0, 2) < Layer::new(1, 0));
        assert!(Layer::new(1, 0) < Layer::new(1, 1));
        assert!(Layer::new(2, 2) < Layer::MAX);
        assert_eq!(Layer::new(1, 2).to_string(), "S1T2");
    }
}
