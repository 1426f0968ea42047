//! Caller phone numbers, normalised to E.164 so that one caller is one key.

use std::fmt;

use rlibphonenumber::{PHONE_NUMBER_UTIL, PhoneNumberFormat};

/// A region (ISO 3166-1 alpha-2, like `US`) used for numbers written without a country code.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Region {
    id: rlibphonenumber::enums::Region,
    code: [u8; 2],
}

impl Region {
    pub fn parse(s: &str) -> Result<Self, String> {
        let upper = s.trim().to_ascii_uppercase();
        if upper.len() != 2 || !upper.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(format!(
                "region must be a two-letter country code like US, got {s:?}"
            ));
        }
        let id = rlibphonenumber::enums::Region::from_code(&upper)
            .ok()
            .filter(|id| PHONE_NUMBER_UTIL.get_country_code_for_region(*id).is_some())
            .ok_or_else(|| format!("{s:?} is not a country code with a phone numbering plan"))?;
        let b = upper.as_bytes();
        Ok(Self {
            id,
            code: [b[0], b[1]],
        })
    }

    pub fn code(&self) -> &str {
        std::str::from_utf8(&self.code).expect("ASCII letters")
    }
}

impl fmt::Debug for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// A caller's number in E.164 form (`+12125551234`).
///
/// Valid numbers are normalised by libphonenumber's rules. A number that is well-formed
/// but not valid in any numbering plan (the documentation's own `+1234567890`) is kept
/// as given after stripping formatting, because senders copy that example.
#[derive(Clone, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct PhoneNumber(String);

/// Longest input we hand to the parser; real numbers with formatting are far shorter.
const MAX_INPUT: usize = 40;

impl PhoneNumber {
    pub fn parse(input: &str, region: Region) -> Result<Self, String> {
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err("phone number is empty".into());
        }
        if trimmed.chars().count() > MAX_INPUT {
            return Err(format!(
                "phone number is longer than {MAX_INPUT} characters"
            ));
        }
        if let Some(bad) = trimmed
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || " +-.()/".contains(*c)))
        {
            return Err(format!("phone number {trimmed:?} contains {bad:?}"));
        }
        let stripped: String = trimmed.chars().filter(|c| !" -.()/".contains(*c)).collect();
        if stripped.is_empty() || !stripped.bytes().any(|b| b.is_ascii_digit()) {
            return Err(format!("{trimmed:?} has no digits"));
        }

        // The parser is third-party code fed with outside input: a panic there must not
        // take a request down with it.
        let parsed = std::panic::catch_unwind(|| {
            let number = PHONE_NUMBER_UTIL.parse(&stripped, Some(region.id)).ok()?;
            number
                .is_valid()
                .then(|| number.format_as(PhoneNumberFormat::E164).to_string())
        });
        if let Ok(Some(e164)) = parsed {
            return Ok(Self(e164));
        }
        if let Some(digits) = stripped.strip_prefix('+')
            && (7..=15).contains(&digits.len())
            && digits.bytes().all(|b| b.is_ascii_digit())
        {
            return Ok(Self(stripped));
        }
        Err(format!(
            "{trimmed:?} is not a phone number valid in region {region}; \
             send it in international form, like +12125551234"
        ))
    }

    /// Whether `input` has the shape every stored number has: `+` and 7 to 15 digits, with
    /// nothing around them. Such text may still not be normal (`+4402079460018` is
    /// `+442079460018`), but normalising a stored number gives it back, so text that
    /// equals a stored number is normal: a call can look its caller up under the text as
    /// sent and normalise only if nothing is found.
    pub fn looks_normal(input: &str) -> bool {
        input.strip_prefix('+').is_some_and(|digits| {
            (7..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit())
        })
    }

    /// A number already in the store: it was normalised when it was written.
    pub fn from_stored(s: String) -> Self {
        Self(s)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }

    /// Load libphonenumber's metadata now rather than on the first request.
    pub fn warm_up() {
        let _ = PHONE_NUMBER_UTIL.parse("+12125551234", None);
    }
}

impl fmt::Display for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PhoneNumber({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us() -> Region {
        Region::parse("US").unwrap()
    }

    fn e164(s: &str) -> String {
        PhoneNumber::parse(s, us()).unwrap().into_string()
    }

    #[test]
    fn formatted_national_and_international_forms_are_one_caller() {
        assert_eq!(e164("+1 (212) 555-1234"), "+12125551234");
        assert_eq!(e164("12125551234"), "+12125551234");
        assert_eq!(e164("+12125551234"), "+12125551234");
        assert_eq!(e164("(212) 555-1234"), "+12125551234");
        assert_eq!(e164("212.555.1234"), "+12125551234");
    }

    #[test]
    fn documentation_example_number_is_kept_as_given() {
        assert_eq!(e164("+1234567890"), "+1234567890");
        assert_eq!(e164("+1 234-567-890"), "+1234567890");
        assert_eq!(e164("+1 (234) 567.890"), "+1234567890");
    }

    #[test]
    fn region_applies_to_numbers_without_country_code() {
        let gb = Region::parse("gb").unwrap();
        assert_eq!(
            PhoneNumber::parse("020 7946 0018", gb).unwrap().as_str(),
            "+442079460018"
        );
    }

    #[test]
    fn what_cannot_be_a_phone_number_is_refused() {
        for bad in [
            "",
            "   ",
            "hello",
            "+",
            "+12",
            "+1234567890123456",
            "555-12",
            "12;34",
            "+1 212 555 1234 <script>",
            "1234567890",
        ] {
            assert!(
                PhoneNumber::parse(bad, us()).is_err(),
                "{bad:?} was accepted"
            );
        }
    }

    #[test]
    fn overlong_input_is_refused_before_parsing() {
        let long = "1".repeat(500);
        let err = PhoneNumber::parse(&long, us()).unwrap_err();
        assert!(err.contains("longer than"), "{err}");
    }

    #[test]
    fn international_numbers_ignore_the_default_region_and_drop_the_trunk_zero() {
        for s in ["+44 020 7946 0018", "+44 (0)20 7946 0018", "+442079460018"] {
            assert_eq!(e164(s), "+442079460018", "{s}");
        }
        let gb = Region::parse("GB").unwrap();
        assert_eq!(
            PhoneNumber::parse("+44 020 7946 0018", gb)
                .unwrap()
                .as_str(),
            "+442079460018"
        );
    }

    #[test]
    fn normalising_is_idempotent() {
        for s in ["+1 (212) 555-1234", "+1234567890", "+44 20 7946 0018"] {
            let once = e164(s);
            assert_eq!(e164(&once), once);
        }
    }

    #[test]
    fn every_normal_number_looks_normal() {
        for s in [
            "+1 (212) 555-1234",
            "+1234567890",
            "+44 020 7946 0018",
            "020 7946 0018",
            "+39 06 698 8 1234",
            "+999 1234567",
        ] {
            let gb = Region::parse("GB").unwrap();
            let normal = PhoneNumber::parse(s, gb).unwrap().into_string();
            assert!(PhoneNumber::looks_normal(&normal), "{s} -> {normal}");
        }
        for not in [
            "",
            "+",
            "+123456",
            "+1234567890123456",
            " +12125551234",
            "+1 212",
            "12125551234",
        ] {
            assert!(!PhoneNumber::looks_normal(not), "{not:?}");
        }
    }

    #[test]
    fn unknown_region_is_refused() {
        assert!(Region::parse("XX").is_err());
        assert!(Region::parse("USA").is_err());
        assert_eq!(Region::parse("de").unwrap().code(), "DE");
    }
}
