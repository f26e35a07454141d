//! FHIR date, dateTime, instant and time parsing, shared by validation and search.
//!
//! A parsed value is a half-open range of epoch milliseconds `[low, high)`
//! covering its precision: `2024` is the whole year, `2024-03-01T10:00:00Z`
//! one second. Values without a time zone (dates) are taken as UTC, so every
//! tenant indexes and queries them the same way.

use time::{Date, Month, PrimitiveDateTime, Time, UtcOffset};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Precision {
    Year,
    Month,
    Day,
    /// Minutes (search queries only), seconds or fractions of a second.
    Time,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct DateRange {
    pub low: i64,
    pub high: i64,
    pub precision: Precision,
    pub has_zone: bool,
}

fn digits(s: &str, n: usize) -> Option<u32> {
    if s.len() == n && s.bytes().all(|b| b.is_ascii_digit()) {
        s.parse().ok()
    } else {
        None
    }
}

fn epoch_ms(date: Date, time: Time, offset: UtcOffset) -> i64 {
    let odt = PrimitiveDateTime::new(date, time).assume_offset(offset);
    (odt.unix_timestamp_nanos() / 1_000_000) as i64
}

fn midnight_ms(date: Date) -> i64 {
    epoch_ms(date, Time::MIDNIGHT, UtcOffset::UTC)
}

/// Parses `YYYY`, `YYYY-MM`, `YYYY-MM-DD` or `YYYY-MM-DDThh:mm:ss[.f](Z|±hh:mm)`.
/// `allow_minutes` accepts `Thh:mm` (search values); resources need seconds.
pub(crate) fn parse(s: &str, allow_minutes: bool) -> Option<DateRange> {
    let (date_part, time_part) = match s.split_once('T') {
        Some((d, t)) => (d, Some(t)),
        None => (s, None),
    };
    let mut fields = date_part.split('-');
    let year = digits(fields.next()?, 4)?;
    if year == 0 {
        return None;
    }
    let year = i32::try_from(year).ok()?;
    let month = fields
        .next()
        .map(|m| digits(m, 2))
        .map_or(Ok(None), |m| m.map(Some).ok_or(()));
    let month = month.ok()?;
    let day = fields
        .next()
        .map(|d| digits(d, 2))
        .map_or(Ok(None), |d| d.map(Some).ok_or(()));
    let day = day.ok()?;
    if fields.next().is_some() {
        return None;
    }
    let month_of = |m: u32| Month::try_from(u8::try_from(m).ok()?).ok();
    match (month, day, time_part) {
        (None, None, None) => {
            let start = Date::from_calendar_date(year, Month::January, 1).ok()?;
            let end = Date::from_calendar_date(year + 1, Month::January, 1).ok()?;
            Some(DateRange {
                low: midnight_ms(start),
                high: midnight_ms(end),
                precision: Precision::Year,
                has_zone: false,
            })
        }
        (Some(m), None, None) => {
            let start = Date::from_calendar_date(year, month_of(m)?, 1).ok()?;
            let end = if m == 12 {
                Date::from_calendar_date(year + 1, Month::January, 1).ok()?
            } else {
                Date::from_calendar_date(year, month_of(m + 1)?, 1).ok()?
            };
            Some(DateRange {
                low: midnight_ms(start),
                high: midnight_ms(end),
                precision: Precision::Month,
                has_zone: false,
            })
        }
        (Some(m), Some(d), None) => {
            let date = Date::from_calendar_date(year, month_of(m)?, u8::try_from(d).ok()?).ok()?;
            let low = midnight_ms(date);
            Some(DateRange {
                low,
                high: low + 86_400_000,
                precision: Precision::Day,
                has_zone: false,
            })
        }
        (Some(m), Some(d), Some(t)) => {
            let date = Date::from_calendar_date(year, month_of(m)?, u8::try_from(d).ok()?).ok()?;
            parse_time_of_day(date, t, allow_minutes)
        }
        _ => None,
    }
}

fn parse_time_of_day(date: Date, t: &str, allow_minutes: bool) -> Option<DateRange> {
    let (clock, offset, has_zone) = if let Some(c) = t.strip_suffix('Z') {
        (c, UtcOffset::UTC, true)
    } else if let Some(pos) = t.rfind(['+', '-']) {
        let (c, z) = t.split_at(pos);
        let sign: i8 = if z.starts_with('-') { -1 } else { 1 };
        let (hh, mm) = z.get(1..)?.split_once(':')?;
        let (hh, mm) = (digits(hh, 2)?, digits(mm, 2)?);
        if hh > 14 || mm > 59 {
            return None;
        }
        let offset = UtcOffset::from_hms(
            sign * i8::try_from(hh).ok()?,
            sign * i8::try_from(mm).ok()?,
            0,
        )
        .ok()?;
        (c, offset, true)
    } else {
        (t, UtcOffset::UTC, false)
    };
    let (clock, fraction) = match clock.split_once('.') {
        Some((c, f)) if !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()) => (c, Some(f)),
        Some(_) => return None,
        None => (clock, None),
    };
    let parts: Vec<&str> = clock.split(':').collect();
    let (h, mi, sec) = match parts.as_slice() {
        [h, m, s] => (digits(h, 2)?, digits(m, 2)?, Some(digits(s, 2)?)),
        [h, m] if allow_minutes && fraction.is_none() => (digits(h, 2)?, digits(m, 2)?, None),
        _ => return None,
    };
    // A leap second (60) is legal in FHIR; it is folded into the second before.
    let s = sec.unwrap_or(0).min(59);
    if h > 23 || mi > 59 || sec.is_some_and(|s| s > 60) {
        return None;
    }
    let millis: u32 = fraction.map_or(0, |f| {
        let mut padded: String = f.chars().take(3).collect();
        while padded.len() < 3 {
            padded.push('0');
        }
        padded.parse().unwrap_or(0)
    });
    let time = Time::from_hms_milli(
        u8::try_from(h).ok()?,
        u8::try_from(mi).ok()?,
        u8::try_from(s).ok()?,
        u16::try_from(millis).ok()?,
    )
    .ok()?;
    let low = epoch_ms(date, time, offset);
    let width = match (sec, fraction) {
        (None, _) => 60_000,
        (Some(_), None) => 1_000,
        (Some(_), Some(_)) => 1,
    };
    Some(DateRange {
        low,
        high: low + width,
        precision: Precision::Time,
        has_zone,
    })
}

/// `hh:mm:ss[.f]`, the FHIR `time` type.
pub(crate) fn is_time(s: &str) -> bool {
    let Ok(date) = Date::from_calendar_date(2000, Month::January, 1) else {
        return false;
    };
    parse_time_of_day(date, s, false).is_some_and(|r| !r.has_zone)
}

/// Current-era sanity is not checked: FHIR accepts any year 0001..9999.
pub(crate) fn is_date(s: &str) -> bool {
    parse(s, false).is_some_and(|r| r.precision != Precision::Time)
}

pub(crate) fn is_date_time(s: &str) -> bool {
    parse(s, false).is_some_and(|r| r.precision != Precision::Time || r.has_zone)
}

pub(crate) fn is_instant(s: &str) -> bool {
    parse(s, false).is_some_and(|r| r.precision == Precision::Time && r.has_zone && s.len() >= 20)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn ranges_cover_the_precision() {
        let y = parse("2024", false).unwrap();
        assert_eq!(y.high - y.low, 366 * 86_400_000);
        let m = parse("2023-02", false).unwrap();
        assert_eq!(m.high - m.low, 28 * 86_400_000);
        let d = parse("2024-03-01", false).unwrap();
        assert_eq!(d.low, 1_709_251_200_000);
        let t = parse("2024-03-01T01:00:00+01:00", false).unwrap();
        assert_eq!((t.low, t.high - t.low), (1_709_251_200_000, 1000));
        assert!(parse("2024-02-30", false).is_none());
        assert!(parse("2024-03-01T10:00", false).is_none());
        assert!(parse("2024-03-01T10:00", true).is_some());
    }

    #[test]
    fn formats() {
        assert!(is_date_time("2015-02-07T13:28:17.239+02:00"));
        assert!(!is_date_time("2015-02-07T13:28:17"));
        assert!(is_instant("2015-02-07T13:28:17Z"));
        assert!(!is_instant("2015-02-07"));
        assert!(is_time("13:28:17"));
        assert!(!is_time("25:00:00"));
        assert!(is_date("1974-12"));
        assert!(!is_date("74-12-25"));
    }
}
