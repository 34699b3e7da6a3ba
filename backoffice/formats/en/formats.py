"""Dates as operations staff read them everywhere: ISO order, 24-hour clock, and the zone named (always UTC).

Django's English formats ("Dec. 5, 2026, 12:07 p.m.") hide the time zone and sort badly in a copied table.
"""
DATE_FORMAT = "Y-m-d"
TIME_FORMAT = "H:i"
DATETIME_FORMAT = "Y-m-d H:i T"
SHORT_DATE_FORMAT = "Y-m-d"
SHORT_DATETIME_FORMAT = "Y-m-d H:i T"
YEAR_MONTH_FORMAT = "F Y"
MONTH_DAY_FORMAT = "F j"
FIRST_DAY_OF_WEEK = 1  # Monday
