package dev.metering.udfs;

/** Writing JSON text by hand on the hot path (no tree, no reflection). */
final class Json {
    private static final char[] HEX = "0123456789abcdef".toCharArray();

    private Json() {}

    /** {@code "name":value} with {@code value} as a JSON string, or {@code null}. */
    static StringBuilder member(StringBuilder out, String name, String value) {
        string(out, name).append(':');
        return value == null ? out.append("null") : string(out, value);
    }

    /** {@code value} as a JSON string: quotes, backslashes and control characters escaped; lone surrogates as escapes. */
    static StringBuilder string(StringBuilder out, String value) {
        out.append('"');
        for (int i = 0; i < value.length(); i++) {
            char c = value.charAt(i);
            if (c == '"' || c == '\\') {
                out.append('\\').append(c);
            } else if (c < 0x20 || c == 0x7f || Character.isSurrogate(c) && !validPair(value, i)) {
                out.append("\\u").append(HEX[c >> 12 & 0xf]).append(HEX[c >> 8 & 0xf]).append(HEX[c >> 4 & 0xf]).append(HEX[c & 0xf]);
            } else if (Character.isHighSurrogate(c)) {
                out.append(c).append(value.charAt(++i));
            } else {
                out.append(c);
            }
        }
        return out.append('"');
    }

    private static boolean validPair(String value, int i) {
        return Character.isHighSurrogate(value.charAt(i))
                && i + 1 < value.length()
                && Character.isLowSurrogate(value.charAt(i + 1));
    }
}
