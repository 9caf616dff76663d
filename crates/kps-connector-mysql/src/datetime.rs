//! Dates and times without a date library: the MySQL binary protocol's DATE / DATETIME /
//! TIMESTAMP / TIME encodings, RFC 3339 text out (ingress) and in (egress), all in UTC.
//!
//! Connections run with the session `time_zone` set to `+00:00`, so TIMESTAMP values are read
//! and written in UTC; DATETIME values (which carry no zone) are taken to be UTC as well.

/// A calendar date and time of day, as the server sends it (no zone: UTC by convention).
///
/// Fields are in significance order, so the derived ordering is chronological.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct CivilDateTime {
    /// 0 to 9999.
    pub year: u16,
    /// 1 to 12 (0 in MySQL "zero dates").
    pub month: u8,
    /// 1 to 31 (0 in MySQL "zero dates").
    pub day: u8,
    /// 0 to 23.
    pub hour: u8,
    /// 0 to 59.
    pub minute: u8,
    /// 0 to 59.
    pub second: u8,
    /// 0 to 999,999.
    pub micros: u32,
}

impl CivilDateTime {
    /// Decodes a binary-protocol DATE, DATETIME or TIMESTAMP value (length byte included).
    pub fn from_binary(buf: &[u8]) -> Option<Self> {
        let (&len, rest) = buf.split_first()?;
        let len = usize::from(len);
        if rest.len() < len {
            return None;
        }
        let mut dt = Self::default();
        if len >= 4 {
            dt.year = u16::from_le_bytes([rest[0], rest[1]]);
            dt.month = rest[2];
            dt.day = rest[3];
        }
        if len >= 7 {
            dt.hour = rest[4];
            dt.minute = rest[5];
            dt.second = rest[6];
        }
        if len >= 11 {
            dt.micros = u32::from_le_bytes([rest[7], rest[8], rest[9], rest[10]]);
        }
        Some(dt)
    }

    /// `YYYY-MM-DD HH:MM:SS.ffffff`, the form MySQL parses for DATETIME and TIMESTAMP.
    pub fn to_sql(&self) -> String {
        let mut out = Vec::with_capacity(26);
        self.write_date(&mut out);
        out.push(b' ');
        self.write_clock(&mut out);
        out.push(b'.');
        push_digits(&mut out, self.micros, 6);
        // Only ASCII digits and separators were written.
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Parses what [`CivilDateTime::to_sql`] wrote (zero dates included, no calendar check).
    pub fn from_sql(text: &str) -> Option<Self> {
        let b = text.as_bytes();
        if b.len() != 26
            || b[4] != b'-'
            || b[7] != b'-'
            || b[10] != b' '
            || b[13] != b':'
            || b[16] != b':'
            || b[19] != b'.'
        {
            return None;
        }
        Some(Self {
            year: u16::try_from(number(&b[0..4])?).ok()?,
            month: u8::try_from(number(&b[5..7])?).ok()?,
            day: u8::try_from(number(&b[8..10])?).ok()?,
            hour: u8::try_from(number(&b[11..13])?).ok()?,
            minute: u8::try_from(number(&b[14..16])?).ok()?,
            second: u8::try_from(number(&b[17..19])?).ok()?,
            micros: number(&b[20..26])?,
        })
    }

    /// Appends `YYYY-MM-DD` (an RFC 3339 full-date).
    pub fn write_date(&self, out: &mut Vec<u8>) {
        push_digits(out, u32::from(self.year), 4);
        out.push(b'-');
        push_digits(out, u32::from(self.month), 2);
        out.push(b'-');
        push_digits(out, u32::from(self.day), 2);
    }

    /// Appends `YYYY-MM-DDTHH:MM:SS[.fff|.ffffff]Z` (RFC 3339, UTC).
    pub fn write_rfc3339(&self, out: &mut Vec<u8>) {
        self.write_date(out);
        out.push(b'T');
        self.write_clock(out);
        write_fraction(out, self.micros);
        out.push(b'Z');
    }

    fn write_clock(&self, out: &mut Vec<u8>) {
        push_digits(out, u32::from(self.hour), 2);
        out.push(b':');
        push_digits(out, u32::from(self.minute), 2);
        out.push(b':');
        push_digits(out, u32::from(self.second), 2);
    }

    /// Days since 1970-01-01 and seconds into that day.
    fn to_epoch(self) -> (i64, i64) {
        let days = days_from_civil(
            i64::from(self.year),
            u32::from(self.month),
            u32::from(self.day),
        );
        let secs =
            i64::from(self.hour) * 3600 + i64::from(self.minute) * 60 + i64::from(self.second);
        (days, secs)
    }

    fn from_epoch(days: i64, secs: i64, micros: u32) -> Option<Self> {
        let (year, month, day) = civil_from_days(days);
        Some(Self {
            year: u16::try_from(year).ok().filter(|y| *y <= 9999)?,
            month: month as u8,
            day: day as u8,
            hour: (secs / 3600) as u8,
            minute: (secs % 3600 / 60) as u8,
            second: (secs % 60) as u8,
            micros,
        })
    }
}

/// Appends a binary-protocol TIME value (length byte included) as `[-]HH:MM:SS[.ffffff]`, hours
/// counting past 24 (TIME is a duration: -838:59:59 to 838:59:59). `None` if malformed.
pub fn write_binary_time(buf: &[u8], out: &mut Vec<u8>) -> Option<()> {
    let (&len, rest) = buf.split_first()?;
    let len = usize::from(len);
    if rest.len() < len {
        return None;
    }
    let (negative, days, hour, minute, second, micros) = match len {
        0 => (false, 0, 0, 0, 0, 0),
        8 | 12 => (
            rest[0] == 1,
            u32::from_le_bytes([rest[1], rest[2], rest[3], rest[4]]),
            rest[5],
            rest[6],
            rest[7],
            if len == 12 {
                u32::from_le_bytes([rest[8], rest[9], rest[10], rest[11]])
            } else {
                0
            },
        ),
        _ => return None,
    };
    if negative {
        out.push(b'-');
    }
    let hours = days.saturating_mul(24).saturating_add(u32::from(hour));
    push_digits(out, hours, 2);
    out.push(b':');
    push_digits(out, u32::from(minute), 2);
    out.push(b':');
    push_digits(out, u32::from(second), 2);
    if micros != 0 {
        out.push(b'.');
        push_digits(out, micros, 6);
    }
    Some(())
}

/// Appends `.fff` when the fraction is whole milliseconds, `.ffffff` otherwise, nothing for 0.
fn write_fraction(out: &mut Vec<u8>, micros: u32) {
    if micros == 0 {
        return;
    }
    out.push(b'.');
    if micros.is_multiple_of(1000) {
        push_digits(out, micros / 1000, 3);
    } else {
        push_digits(out, micros, 6);
    }
}

/// Appends `value` as exactly `width` decimal digits (at least `width`, if it is larger).
fn push_digits(out: &mut Vec<u8>, value: u32, width: usize) {
    let mut digits = [0u8; 10];
    let mut n = value;
    let mut len = 0;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for _ in len..width {
        out.push(b'0');
    }
    out.extend(digits[..len].iter().rev());
}

/// Why a text is not a date or time this connector accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Not `YYYY-MM-DD`.
    #[error("expects a date as YYYY-MM-DD")]
    Date,
    /// Not an RFC 3339 date-time.
    #[error("expects an RFC 3339 date-time such as 2024-05-01T12:30:00Z")]
    DateTime,
    /// Not `[-]HH:MM:SS[.ffffff]`.
    #[error("expects a time as [-]HH:MM:SS[.ffffff]")]
    Time,
}

/// Parses `YYYY-MM-DD` (month and day checked against the calendar).
pub fn parse_date(text: &str) -> Result<CivilDateTime, ParseError> {
    let b = text.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return Err(ParseError::Date);
    }
    let year = number(&b[0..4]).ok_or(ParseError::Date)?;
    let month = number(&b[5..7]).ok_or(ParseError::Date)?;
    let day = number(&b[8..10]).ok_or(ParseError::Date)?;
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return Err(ParseError::Date);
    }
    Ok(CivilDateTime {
        year: year as u16,
        month: month as u8,
        day: day as u8,
        ..CivilDateTime::default()
    })
}

/// Parses an RFC 3339 date-time (`T`, `t` or a space between date and time; fraction of up to
/// 9 digits, cut to microseconds; `Z` or `±HH:MM`, or no offset meaning UTC) or a bare date
/// (midnight UTC), and converts it to UTC.
pub fn parse_rfc3339(text: &str) -> Result<CivilDateTime, ParseError> {
    const E: ParseError = ParseError::DateTime;
    let b = text.as_bytes();
    if b.len() == 10 {
        return parse_date(text).map_err(|_| E);
    }
    if b.len() < 19 || !matches!(b[10], b'T' | b't' | b' ') || b[13] != b':' || b[16] != b':' {
        return Err(E);
    }
    let mut dt = parse_date(&text[..10]).map_err(|_| E)?;
    let hour = number(&b[11..13]).ok_or(E)?;
    let minute = number(&b[14..16]).ok_or(E)?;
    let second = number(&b[17..19]).ok_or(E)?;
    if hour > 23 || minute > 59 || second > 59 {
        return Err(E);
    }
    dt.hour = hour as u8;
    dt.minute = minute as u8;
    dt.second = second as u8;
    let mut rest = &b[19..];
    if let Some((b'.', tail)) = rest.split_first() {
        let digits = tail.iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 || digits > 9 {
            return Err(E);
        }
        let mut micros = 0u32;
        for i in 0..6 {
            micros = micros * 10
                + tail
                    .get(i)
                    .filter(|_| i < digits)
                    .map_or(0, |c| u32::from(c - b'0'));
        }
        dt.micros = micros;
        rest = &tail[digits..];
    }
    let offset_secs: i64 = match rest {
        [] | [b'Z'] | [b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let h = number(&[*h1, *h2]).ok_or(E)?;
            let m = number(&[*m1, *m2]).ok_or(E)?;
            if h > 23 || m > 59 {
                return Err(E);
            }
            let secs = i64::from(h * 3600 + m * 60);
            if *sign == b'-' { -secs } else { secs }
        }
        _ => return Err(E),
    };
    if offset_secs == 0 {
        return Ok(dt);
    }
    let (days, secs) = dt.to_epoch();
    let total = days * 86_400 + secs - offset_secs;
    CivilDateTime::from_epoch(
        total.div_euclid(86_400),
        total.rem_euclid(86_400),
        dt.micros,
    )
    .ok_or(E)
}

/// Checks a TIME text: `[-]H+:MM:SS[.f{1,6}]`.
pub fn check_time(text: &str) -> Result<(), ParseError> {
    const E: ParseError = ParseError::Time;
    let b = text.strip_prefix('-').unwrap_or(text).as_bytes();
    let hours = b.iter().take_while(|c| c.is_ascii_digit()).count();
    if !(1..=3).contains(&hours) {
        return Err(E);
    }
    let rest = &b[hours..];
    if rest.len() < 6 || rest[0] != b':' || rest[3] != b':' {
        return Err(E);
    }
    let minute = number(&rest[1..3]).ok_or(E)?;
    let second = number(&rest[4..6]).ok_or(E)?;
    if minute > 59 || second > 59 {
        return Err(E);
    }
    match &rest[6..] {
        [] => Ok(()),
        [b'.', frac @ ..]
            if (1..=6).contains(&frac.len()) && frac.iter().all(u8::is_ascii_digit) =>
        {
            Ok(())
        }
        _ => Err(E),
    }
}

fn number(digits: &[u8]) -> Option<u32> {
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(digits.iter().fold(0, |n, d| n * 10 + u32::from(d - b'0')))
}

fn is_leap(year: u32) -> bool {
    (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400)
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The proleptic Gregorian date `days` after 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rfc(dt: &CivilDateTime) -> String {
        let mut out = Vec::new();
        dt.write_rfc3339(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn binary_values_decode() {
        let dt =
            CivilDateTime::from_binary(&[11, 0xE8, 0x07, 2, 29, 23, 59, 58, 0x40, 0xE2, 0x01, 0])
                .unwrap();
        assert_eq!(rfc(&dt), "2024-02-29T23:59:58.123456Z");
        let date = CivilDateTime::from_binary(&[4, 0xE8, 0x07, 1, 5]).unwrap();
        assert_eq!(rfc(&date), "2024-01-05T00:00:00Z");
        let ms = CivilDateTime::from_binary(&[11, 0xE8, 0x07, 1, 5, 1, 2, 3, 0x20, 0xA1, 0x07, 0])
            .unwrap();
        assert_eq!(rfc(&ms), "2024-01-05T01:02:03.500Z");
        assert_eq!(
            CivilDateTime::from_binary(&[0]).unwrap(),
            CivilDateTime::default()
        );
        assert!(CivilDateTime::from_binary(&[7, 1, 2]).is_none());
        assert_eq!(date.to_sql(), "2024-01-05 00:00:00.000000");
        assert_eq!(CivilDateTime::from_sql(&dt.to_sql()), Some(dt));
        let zero = CivilDateTime::default();
        assert_eq!(CivilDateTime::from_sql(&zero.to_sql()), Some(zero));
    }

    #[test]
    fn times_decode_as_durations() {
        let mut out = Vec::new();
        write_binary_time(&[8, 1, 34, 0, 0, 0, 22, 59, 59], &mut out).unwrap();
        assert_eq!(out, b"-838:59:59");
        out.clear();
        write_binary_time(&[12, 0, 0, 0, 0, 0, 1, 2, 3, 7, 0, 0, 0], &mut out).unwrap();
        assert_eq!(out, b"01:02:03.000007");
        out.clear();
        write_binary_time(&[0], &mut out).unwrap();
        assert_eq!(out, b"00:00:00");
    }

    #[test]
    fn rfc3339_parses_to_utc() {
        let utc = parse_rfc3339("2024-03-01T01:30:00+02:00").unwrap();
        assert_eq!(utc.to_sql(), "2024-02-29 23:30:00.000000");
        let back = parse_rfc3339("1999-12-31T23:00:00.5-01:00").unwrap();
        assert_eq!(back.to_sql(), "2000-01-01 00:00:00.500000");
        assert_eq!(
            parse_rfc3339("2024-05-01 12:00:00").unwrap().to_sql(),
            "2024-05-01 12:00:00.000000"
        );
        assert_eq!(
            parse_rfc3339("2024-05-01").unwrap().to_sql(),
            "2024-05-01 00:00:00.000000"
        );
        assert_eq!(
            parse_rfc3339("2024-05-01T12:00:00.123456789Z")
                .unwrap()
                .micros,
            123_456
        );
        for bad in [
            "2024-02-30T00:00:00Z",
            "2024-05-01T24:00:00Z",
            "yesterday",
            "2024-05-01T12:00:00+1",
            "2024-05-01T12:00:00.Z",
        ] {
            assert!(parse_rfc3339(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn written_and_parsed_agree() {
        for days in [-719_468i64, -1, 0, 59, 11_016, 19_782, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        let dt = parse_rfc3339("2024-02-29T23:59:58.123456Z").unwrap();
        assert_eq!(parse_rfc3339(&rfc(&dt)).unwrap(), dt);
    }

    #[test]
    fn dates_and_times_are_checked() {
        assert!(parse_date("2023-02-29").is_err());
        assert!(parse_date("2024-02-29").is_ok());
        assert!(check_time("-838:59:59").is_ok());
        assert!(check_time("12:00:00.25").is_ok());
        assert!(check_time("12:60:00").is_err());
        assert!(check_time("noon").is_err());
    }
}
