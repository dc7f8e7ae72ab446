"""Civil calendar arithmetic on integer day numbers, without the platform's time module.

MicroPython ports disagree on their epoch (older ESP32 builds count from 2000), so the
callers pass days since 1970-01-01 computed from Unix seconds, and only integers are used.
"""


def civil_from_days(days: int) -> tuple[int, int, int]:
    """(year, month, day) of a day number counted from 1970-01-01 (proleptic Gregorian)."""
    days += 719468  # count from 0000-03-01 so leap days fall at the end of a year
    era = days // 146097
    day_of_era = days - era * 146097
    year_of_era = (
        day_of_era - day_of_era // 1460 + day_of_era // 36524 - day_of_era // 146096
    ) // 365
    day_of_year = day_of_era - (365 * year_of_era + year_of_era // 4 - year_of_era // 100)
    month_from_march = (5 * day_of_year + 2) // 153
    day = day_of_year - (153 * month_from_march + 2) // 5 + 1
    month = month_from_march + 3 if month_from_march < 10 else month_from_march - 9
    year = year_of_era + era * 400 + (1 if month <= 2 else 0)
    return year, month, day


def days_from_civil(year: int, month: int, day: int) -> int:
    """The day number (from 1970-01-01) of a date; the inverse of civil_from_days."""
    if month <= 2:
        year -= 1  # count years from March, as civil_from_days does
    era = year // 400
    year_of_era = year - era * 400
    day_of_year = (153 * (month - 3 if month > 2 else month + 9) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    return era * 146097 + day_of_era - 719468


def date_number(days: int) -> int:
    """The yyyymmdd integer of a day number: ordered like the dates themselves."""
    year, month, day = civil_from_days(days)
    return year * 10000 + month * 100 + day


def weekday(days: int) -> int:
    """ISO weekday counted from 0 = Monday; 1970-01-01 was a Thursday."""
    return (days + 3) % 7
