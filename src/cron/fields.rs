//! The parsed form of a cron expression: one bitset per field plus, per field, whether its text
//! starts with `*`. Those flags decide two rules of the README's "Cron and time zones": the day-of-month/day-of-week
//! combination (OR only when both are restricted) and interval versus fixed-time schedules.

/// Bit set for "field text starts with `*`", indexed like [`Field`].
const STAR_MINUTE: u8 = 1 << 0;
const STAR_HOUR: u8 = 1 << 1;
const STAR_DOM: u8 = 1 << 2;
const STAR_DOW: u8 = 1 << 4;

/// All 31 days of the month (bits 1..=31).
pub(crate) const ALL_DOM: u32 = 0xFFFF_FFFE;
/// All seven weekdays (bits 0..=6, Sunday = 0).
pub(crate) const ALL_DOW: u8 = 0x7F;

/// One of the five fields, in expression order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Field {
    Minute,
    Hour,
    DayOfMonth,
    Month,
    DayOfWeek,
}

impl Field {
    /// The five fields in the order they are written.
    pub(crate) const ALL: [Field; 5] = [
        Field::Minute,
        Field::Hour,
        Field::DayOfMonth,
        Field::Month,
        Field::DayOfWeek,
    ];

    /// The name used in error messages.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Field::Minute => "minute",
            Field::Hour => "hour",
            Field::DayOfMonth => "day-of-month",
            Field::Month => "month",
            Field::DayOfWeek => "day-of-week",
        }
    }

    /// Smallest value a user may write.
    pub(crate) fn min(self) -> u32 {
        match self {
            Field::Minute | Field::Hour | Field::DayOfWeek => 0,
            Field::DayOfMonth | Field::Month => 1,
        }
    }

    /// Largest value a user may write (7 = Sunday again for day-of-week).
    pub(crate) fn max(self) -> u32 {
        match self {
            Field::Minute => 59,
            Field::Hour => 23,
            Field::DayOfMonth => 31,
            Field::Month => 12,
            Field::DayOfWeek => 7,
        }
    }

    /// Names accepted in this field, with the value of the first name.
    pub(crate) fn names(self) -> Option<(&'static [&'static str], u32)> {
        match self {
            Field::Month => Some((&MONTH_NAMES, 1)),
            Field::DayOfWeek => Some((&DAY_NAMES, 0)),
            _ => None,
        }
    }

    fn star_bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// Month names, January first.
pub(crate) const MONTH_NAMES: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
/// Day names, Sunday first (Sunday = 0).
pub(crate) const DAY_NAMES: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

/// The matching sets of an expression. Small and `Copy`: it lives inside every schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Fields {
    /// Bit m set when minute m (0..=59) matches.
    pub(crate) minutes: u64,
    /// Bit h set when hour h (0..=23) matches.
    pub(crate) hours: u32,
    /// Bit d set when day-of-month d (1..=31) matches.
    pub(crate) dom: u32,
    /// Bit m set when month m (1..=12) matches.
    pub(crate) months: u16,
    /// Bit w set when weekday w matches, Sunday = 0 (a written 7 lands on bit 0).
    pub(crate) dow: u8,
    /// Which field texts start with `*` (see the `STAR_*` bits).
    pub(crate) stars: u8,
}

impl Fields {
    /// An empty set; the parser fills it.
    pub(crate) fn empty() -> Self {
        Fields {
            minutes: 0,
            hours: 0,
            dom: 0,
            months: 0,
            dow: 0,
            stars: 0,
        }
    }

    /// Adds `value` (already range-checked) to `field`'s set.
    pub(crate) fn insert(&mut self, field: Field, value: u32) {
        match field {
            Field::Minute => self.minutes |= 1 << value,
            Field::Hour => self.hours |= 1 << value,
            Field::DayOfMonth => self.dom |= 1 << value,
            Field::Month => self.months |= 1 << value,
            Field::DayOfWeek => self.dow |= 1 << (value % 7),
        }
    }

    /// Records that `field`'s text starts with `*`.
    pub(crate) fn mark_star(&mut self, field: Field) {
        self.stars |= field.star_bit();
    }

    /// Whether `field`'s text starts with `*`.
    #[cfg(test)]
    pub(crate) fn starts_with_star(&self, field: Field) -> bool {
        self.stars & field.star_bit() != 0
    }

    /// Interval schedule (README, "Cron and time zones"): the minute or hour field starts with `*`.
    pub(crate) fn is_interval(&self) -> bool {
        self.stars & (STAR_MINUTE | STAR_HOUR) != 0
    }

    /// Both day fields restricted (neither starts with `*`): a day matches if either matches.
    pub(crate) fn days_or(&self) -> bool {
        self.stars & (STAR_DOM | STAR_DOW) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each field's star lands where the two rules (README, "Cron and time zones") read it: a
    /// star in the minute or the hour makes an interval schedule, a star in either day field turns the day rule from
    /// "either matches" into "both match", and a star in the month changes neither. (Two fields
    /// sharing a bit, or a bit read under the wrong field, fails one of these.)
    #[test]
    fn each_fields_star_drives_its_own_rule() {
        let cases = [
            (Field::Minute, true, true),
            (Field::Hour, true, true),
            (Field::DayOfMonth, false, false),
            (Field::Month, false, true),
            (Field::DayOfWeek, false, false),
        ];
        for (field, interval, days_or) in cases {
            let mut f = Fields::empty();
            f.mark_star(field);
            assert_eq!(f.is_interval(), interval, "star in {}", field.name());
            assert_eq!(f.days_or(), days_or, "star in {}", field.name());
            for other in Field::ALL {
                assert_eq!(
                    f.starts_with_star(other),
                    other == field,
                    "{}",
                    other.name()
                );
            }
        }
        let none = Fields::empty();
        assert!(!none.is_interval() && none.days_or());
    }

    /// The same rules from written expressions, through the parser.
    #[test]
    fn parsed_expressions_mark_the_fields_that_start_with_a_star() {
        for (expr, interval, days_or) in [
            ("*/15 9 1 * 1", true, true),
            ("0 * 1 * 1", true, true),
            ("30 2 * * *", false, false),
            ("30 2 1 * *", false, false),
            ("30 2 * * 1-5", false, false),
            ("30 2 1 */2 1", false, true),
            ("30 2 1,15 * MON", false, true),
        ] {
            let f = crate::cron::parse::parse(expr).unwrap();
            assert_eq!(f.is_interval(), interval, "{expr}");
            assert_eq!(f.days_or(), days_or, "{expr}");
        }
    }

    #[test]
    fn seven_is_sunday() {
        let mut f = Fields::empty();
        f.insert(Field::DayOfWeek, 7);
        assert_eq!(f.dow, 1);
    }
}
