package dev.metering.udfs;

import org.apache.flink.table.annotation.DataTypeHint;
import org.apache.flink.table.functions.ScalarFunction;

import java.util.regex.Pattern;

/**
 * {@code metering_event_millis(text)}: epoch milliseconds of an RFC 3339 timestamp with an offset,
 * or NULL when the text is not a real instant.
 *
 * <p>The same rules as the SQL expression it replaces ({@code jobs/sql.event_millis_sql}) and the
 * Python validator: the pattern fixes every field's position; the calendar check (month lengths,
 * leap years) rejects dates such as 30 February; hours up to 23, minutes and seconds up to 59,
 * offset minutes up to 59; the fraction is truncated to milliseconds; the offset is subtracted.
 */
public final class EventMillis extends ScalarFunction {
    private static final Pattern RFC3339 =
            Pattern.compile(
                    "^\\d{4}-\\d{2}-\\d{2}[Tt ]\\d{2}:\\d{2}:\\d{2}(\\.\\d{1,9})?([Zz]|[+-]\\d{2}:\\d{2})$");

    public @DataTypeHint("BIGINT") Long eval(String text) {
        return millis(text);
    }

    /** The epoch milliseconds of {@code text}, or null. */
    public static Long millis(String text) {
        if (text == null || !RFC3339.matcher(text).matches()) {
            return null;
        }
        long year = digits(text, 0, 4);
        long month = digits(text, 5, 2);
        long day = digits(text, 8, 2);
        long hour = digits(text, 11, 2);
        long minute = digits(text, 14, 2);
        long second = digits(text, 17, 2);
        int length = text.length();
        char last = text.charAt(length - 1);
        boolean utc = last == 'Z' || last == 'z';
        long offsetMinutes = 0;
        if (!utc) {
            long offsetHour = digits(text, length - 5, 2);
            long offsetMinute = digits(text, length - 2, 2);
            if (offsetMinute > 59) {
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
            for (int i = 20; i < length && scale < 3 && Character.isDigit(text.charAt(i)); i++, scale++) {
                fraction = fraction * 10 + (text.charAt(i) - '0');
            }
            for (; scale < 3; scale++) {
                fraction *= 10;
            }
        }
        long days = daysFromCivil(year, month, day);
        return ((days * 24 + hour) * 60 + minute) * 60_000 + second * 1000 + fraction - offsetMinutes * 60_000;
    }

    private static long digits(String text, int start, int length) {
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
