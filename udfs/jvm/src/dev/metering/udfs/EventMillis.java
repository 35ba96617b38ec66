package dev.metering.udfs;

import org.apache.flink.table.annotation.DataTypeHint;
import org.apache.flink.table.functions.ScalarFunction;

/**
 * {@code metering_event_millis(text)}: epoch milliseconds of an RFC 3339 timestamp with an offset,
 * or NULL when the text is not a real instant.
 *
 * <p>The same rules as the Python validator (schemas/validate.py: the schema's pattern, then
 * {@code datetime.fromisoformat}): the shape {@code YYYY-MM-DD[Tt ]hh:mm:ss[.f{1,9}](Z|z|+hh:mm|-hh:mm)}
 * with ASCII digits, checked character by character (a regular expression here cost more than
 * the rest of the function); the calendar check (month lengths, leap years) rejects dates such as
 * 30 February; hours up to 23, minutes and seconds up to 59, offsets up to 23:59; the fraction is
 * truncated to milliseconds; the offset is subtracted. Instants before {@link #MIN_MILLIS}
 * (1970-01-01T00:00:00Z) or from {@link #MAX_MILLIS} (2100-01-01T00:00:00Z) on are refused too
 * (schemas/validate.py, {@code TIME_MIN} and {@code TIME_MAX}).
 */
public final class EventMillis extends ScalarFunction {
    static final long MIN_MILLIS = 0L;
    static final long MAX_MILLIS = 4_102_444_800_000L;

    public @DataTypeHint("BIGINT") Long eval(String text) {
        return millis(text);
    }

    /** Whether {@code text} has the shape of an RFC 3339 timestamp with an offset (see the class). */
    static boolean wellFormed(String text) {
        int length = text.length();
        if (length < 20
                || !digits(text, 0, 4) || text.charAt(4) != '-' || !digits(text, 5, 2) || text.charAt(7) != '-'
                || !digits(text, 8, 2) || "Tt ".indexOf(text.charAt(10)) < 0
                || !digits(text, 11, 2) || text.charAt(13) != ':' || !digits(text, 14, 2) || text.charAt(16) != ':'
                || !digits(text, 17, 2)) {
            return false;
        }
        int i = 19;
        if (text.charAt(i) == '.') {
            int start = ++i;
            while (i < length && isDigit(text.charAt(i))) {
                i++;
            }
            if (i == start || i - start > 9) {
                return false;
            }
        }
        if (i == length - 1) {
            char zone = text.charAt(i);
            return zone == 'Z' || zone == 'z';
        }
        return i == length - 6
                && (text.charAt(i) == '+' || text.charAt(i) == '-')
                && digits(text, i + 1, 2) && text.charAt(i + 3) == ':' && digits(text, i + 4, 2);
    }

    private static boolean isDigit(char c) {
        return c >= '0' && c <= '9';
    }

    private static boolean digits(String text, int start, int count) {
        for (int i = start; i < start + count; i++) {
            if (!isDigit(text.charAt(i))) {
                return false;
            }
        }
        return true;
    }

    /** The epoch milliseconds of {@code text}, or null. */
    public static Long millis(String text) {
        if (text == null || !wellFormed(text)) {
            return null;
        }
        long year = number(text, 0, 4);
        long month = number(text, 5, 2);
        long day = number(text, 8, 2);
        long hour = number(text, 11, 2);
        long minute = number(text, 14, 2);
        long second = number(text, 17, 2);
        int length = text.length();
        char last = text.charAt(length - 1);
        boolean utc = last == 'Z' || last == 'z';
        long offsetMinutes = 0;
        if (!utc) {
            long offsetHour = number(text, length - 5, 2);
            long offsetMinute = number(text, length - 2, 2);
            if (offsetHour > 23 || offsetMinute > 59) {
                return null;
            }
            offsetMinutes = (text.charAt(length - 6) == '-' ? -1 : 1) * (offsetHour * 60 + offsetMinute);
        }
        if (year < 1 || month < 1 || month > 12 || day < 1 || day > monthDays(year, month)) {
            return null;
        }
        if (hour > 23 || minute > 59 || second > 59) {
            return null;
        }
        long fraction = 0;
        if (text.length() > 19 && text.charAt(19) == '.') {
            int scale = 0;
            for (int i = 20; i < length && scale < 3 && isDigit(text.charAt(i)); i++, scale++) {
                fraction = fraction * 10 + (text.charAt(i) - '0');
            }
            for (; scale < 3; scale++) {
                fraction *= 10;
            }
        }
        long days = daysFromCivil(year, month, day);
        long millis = ((days * 24 + hour) * 60 + minute) * 60_000 + second * 1000 + fraction - offsetMinutes * 60_000;
        return millis >= MIN_MILLIS && millis < MAX_MILLIS ? millis : null;
    }

    private static long number(String text, int start, int length) {
        long value = 0;
        for (int i = start; i < start + length; i++) {
            value = value * 10 + (text.charAt(i) - '0');
        }
        return value;
    }

    private static long monthDays(long year, long month) {
        if (month == 2) {
            boolean leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
            return leap ? 29 : 28;
        }
        return month == 4 || month == 6 || month == 9 || month == 11 ? 30 : 31;
    }

    /** Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil, year >= 1). */
    private static long daysFromCivil(long year, long month, long day) {
        long y = year - (month <= 2 ? 1 : 0);
        long era = y / 400;
        long yoe = y - era * 400;
        long doy = (153 * (month > 2 ? month - 3 : month + 9) + 2) / 5 + day - 1;
        long doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        return era * 146097 + doe - 719468;
    }
}
