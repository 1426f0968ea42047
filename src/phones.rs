//! Recently normalised phone numbers, remembered.
//!
//! Validating a number is the costliest step of an ingest or a call start (libphonenumber
//! runs its region's patterns, several microseconds a number), and the same caller's number
//! usually comes twice within seconds: from the webhook, then from the call. A bounded
//! two-generation map keeps the recent results.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;

use crate::domain::phone::{PhoneNumber, Region};

const SHARDS: usize = 8;
/// Entries per generation per shard: at most `2 × SHARDS × GENERATION` numbers are kept.
const GENERATION: usize = 4096;

/// Input text -> the region it was read in and the number.
type Generation = HashMap<String, (Region, PhoneNumber)>;

#[derive(Default)]
struct Shard {
    current: Generation,
    previous: Generation,
}

/// Normalises numbers, remembering recent answers.
pub struct Phones {
    shards: Vec<Mutex<Shard>>,
    hasher: RandomState,
}

impl Default for Phones {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
        }
    }
}

impl Phones {
    /// [`PhoneNumber::parse`], answered from memory when the same text was seen recently.
    pub fn parse(&self, input: &str, region: Region) -> Result<PhoneNumber, String> {
        let shard = &self.shards[(self.hasher.hash_one(input) as usize) % SHARDS];
        {
            let mut s = shard.lock().expect("phone cache lock");
            if let Some((r, hit)) = s.current.get(input)
                && *r == region
            {
                return Ok(hit.clone());
            }
            if let Some((r, hit)) = s.previous.remove(input)
                && r == region
            {
                s.current.insert(input.to_owned(), (r, hit.clone()));
                return Ok(hit);
            }
        }
        let parsed = PhoneNumber::parse(input, region)?;
        let mut s = shard.lock().expect("phone cache lock");
        if s.current.len() >= GENERATION {
            // The oldest generation's table is emptied and reused, so the new one does not
            // grow (and rehash) its way back up: every benchmark number is new, and that
            // regrowth was ~1 % of the request threads' time.
            let Shard { current, previous } = &mut *s;
            std::mem::swap(current, previous);
            current.clear();
        }
        s.current.insert(input.to_owned(), (region, parsed.clone()));
        Ok(parsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembered_answers_equal_fresh_ones() {
        let phones = Phones::default();
        let us = Region::parse("US").unwrap();
        for _ in 0..2 {
            assert_eq!(
                phones.parse("+1 (212) 555-1234", us).unwrap().as_str(),
                "+12125551234"
            );
            assert!(phones.parse("call me", us).is_err());
        }
    }

    #[test]
    fn the_region_is_part_of_the_key() {
        let phones = Phones::default();
        let us = Region::parse("US").unwrap();
        let gb = Region::parse("GB").unwrap();
        assert_eq!(
            phones.parse("020 7946 0018", gb).unwrap().as_str(),
            "+442079460018"
        );
        assert!(phones.parse("020 7946 0018", us).is_err());
    }

    #[test]
    fn the_cache_stays_bounded() {
        let phones = Phones::default();
        let us = Region::parse("US").unwrap();
        for i in 0..(3 * SHARDS * GENERATION) {
            phones
                .parse(&format!("+1212{:07}", 2_000_000 + i), us)
                .unwrap();
        }
        let kept: usize = phones
            .shards
            .iter()
            .map(|s| {
                let s = s.lock().unwrap();
                s.current.len() + s.previous.len()
            })
            .sum();
        assert!(kept <= 2 * SHARDS * GENERATION, "{kept}");
    }
}
