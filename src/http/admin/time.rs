//! Times as console pages show them. A page carries each time in RFC 3339 (`datetime`) and
//! as readable UTC text; the page's script rewrites the text to the reader's local time and
//! how long ago it was, with the exact time on hover.

/// `6 Dec 2026, 09:07:15 UTC` from an RFC 3339 time in UTC (`2026-12-06T09:07:15.123Z`), as
/// the store writes them; anything else is shown as it is.
pub fn utc_text(iso: impl AsRef<str>) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let iso = iso.as_ref();
    let number = |from: usize, to: usize| iso.get(from..to).and_then(|s| s.parse::<u32>().ok());
    let utc = iso.ends_with('Z') || iso.ends_with("+00:00");
    match (number(0, 4), number(5, 7), number(8, 10), iso.get(11..19)) {
        (Some(year), Some(month @ 1..=12), Some(day), Some(clock)) if utc => {
            format!("{day} {} {year}, {clock} UTC", MONTHS[month as usize - 1])
        }
        _ => iso.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::utc_text;

    #[test]
    fn rfc3339_times_read_as_a_day_a_month_and_a_clock_in_utc() {
        assert_eq!(
            utc_text("2026-12-06T09:07:15.123Z"),
            "6 Dec 2026, 09:07:15 UTC"
        );
        assert_eq!(
            utc_text("2026-01-31T23:59:59Z"),
            "31 Jan 2026, 23:59:59 UTC"
        );
        assert_eq!(
            utc_text(crate::store::rfc3339(0)),
            "1 Jan 1970, 00:00:00 UTC"
        );
    }

    #[test]
    fn what_is_not_a_utc_time_is_shown_as_it_is() {
        assert_eq!(utc_text(""), "");
        assert_eq!(utc_text("10:41"), "10:41");
        assert_eq!(utc_text("2026-13-06T09:07:15Z"), "2026-13-06T09:07:15Z");
        assert_eq!(
            utc_text("2026-12-06T09:07:15+02:00"),
            "2026-12-06T09:07:15+02:00"
        );
    }
}
