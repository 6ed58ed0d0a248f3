//! Calendar time in UTC from a Unix time: the one conversion every dated format uses (ISO
//! 9660 and FAT timestamps, RFC 3339 in manifests and metadata). No host time zone is read.

/// Civil date (year, month, day) from days since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, exact for the proleptic Gregorian calendar).
pub fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// (year, month, day, hour, minute, second) in UTC of `t` seconds since the epoch.
pub fn utc(t: u64) -> (i64, u32, u32, u32, u32, u32) {
    let (y, m, d) = civil((t / 86_400) as i64);
    let s = t % 86_400;
    (y, m, d, (s / 3600) as u32, (s / 60 % 60) as u32, (s % 60) as u32)
}
