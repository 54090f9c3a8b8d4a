//! The shape of a queue (slot size and capacity) and its validation.
//!
//! Guarantees: a spec that passes [`QueueSpec::check`] describes a file whose
//! size fits in `usize`, whose slots are 8-byte aligned and hold at least 8
//! payload bytes, and whose capacity is a power of two, so `pos & (capacity-1)`
//! is always a valid slot index.

use crate::error::SpecError;
use crate::header::{HEADER_SIZE, SLOT_PREFIX};

/// Shape of a queue: how many slots of what size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueSpec {
    /// Bytes per slot, including the queue's own per-slot length word.
    pub slot_size: u32,
    /// Number of slots; a power of two.
    pub capacity: u32,
}

impl QueueSpec {
    /// Checks that the spec can describe a queue.
    ///
    /// # Errors
    /// `slot_size` below 16 or not a multiple of 8, `capacity` not a power of
    /// two, or a total size that cannot be mapped.
    pub fn check(&self) -> Result<(), SpecError> {
        if self.slot_size < 16 {
            return Err(SpecError::SlotTooSmall);
        }
        if self.slot_size & 7 != 0 {
            return Err(SpecError::SlotNotMultipleOf8);
        }
        if !self.capacity.is_power_of_two() {
            return Err(SpecError::CapacityNotPowerOfTwo);
        }
        let total = u64::from(self.slot_size)
            .checked_mul(u64::from(self.capacity))
            .and_then(|s| s.checked_add(HEADER_SIZE as u64));
        match total {
            Some(t) if t <= isize::MAX as u64 && usize::try_from(t).is_ok() => Ok(()),
            _ => Err(SpecError::TooLarge),
        }
    }

    /// Largest message in bytes: `slot_size - 8`.
    pub fn payload_size(&self) -> usize {
        (self.slot_size as usize).saturating_sub(SLOT_PREFIX)
    }

    /// Size of the queue file in bytes: the header page plus every slot.
    pub fn file_size(&self) -> u64 {
        HEADER_SIZE as u64 + u64::from(self.slot_size) * u64::from(self.capacity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_validation() {
        let ok = QueueSpec { slot_size: 16, capacity: 1 };
        assert_eq!(ok.check(), Ok(()));
        assert_eq!(ok.payload_size(), 8);
        assert_eq!(ok.file_size(), 4096 + 16);
        let bad = |slot_size, capacity| QueueSpec { slot_size, capacity }.check();
        assert_eq!(bad(8, 4), Err(SpecError::SlotTooSmall));
        assert_eq!(bad(20, 4), Err(SpecError::SlotNotMultipleOf8));
        assert_eq!(bad(64, 0), Err(SpecError::CapacityNotPowerOfTwo));
        assert_eq!(bad(64, 6), Err(SpecError::CapacityNotPowerOfTwo));
        assert_eq!(bad(64, 1 << 31), Ok(()));
    }
}
