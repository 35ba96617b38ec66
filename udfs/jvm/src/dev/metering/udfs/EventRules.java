package dev.metering.udfs;

import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonFactory;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonGenerator;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonParser;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonToken;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.util.JsonRecyclerPools;

import java.io.IOException;
import java.io.StringWriter;
import java.nio.ByteBuffer;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.util.Arrays;
import java.util.Map;
import java.util.TreeMap;

/**
 * The job's reading of one Kafka record as a usage event: the verdict and the fields, in one pass.
 *
 * <p>The definition of a valid event is {@code schemas/validate.py} (with {@code
 * schemas/usage_event.v1.json}); this class implements the same rules in the same order, and
 * {@code tests/unit/test_event_agreement.py} feeds both the same lines (a corpus, the hostile
 * corpus and generated ones) and fails on any difference in verdict, reason or fields:
 *
 * <ol>
 *   <li>more than {@link #MAX_EVENT_BYTES} bytes: {@code too_large}, unread;
 *   <li>outside the JSON profile: {@code malformed_json}. One JSON text in strict UTF-8 without a
 *       byte-order mark, nothing after it; no name twice in one object; no lone surrogate in any
 *       string or name; nesting at most {@link #MAX_DEPTH}; numbers at most
 *       {@link #MAX_NUMBER_CHARS} characters, exponents at most {@link #MAX_EXPONENT_DIGITS} digits; no NaN or Infinity;
 *   <li>not an object: {@code not_an_object}; a heartbeat ({@code "heartbeat": true} or
 *       {@code "true"}, no {@code event_id} or a null one): {@code heartbeat}, or the reason of
 *       its timestamp;
 *   <li>the schema, in the order of {@code REASONS} in schemas/validate.py: {@code missing_field},
 *       {@code unknown_field}, {@code bad_schema_version}, {@code bad_event_id},
 *       {@code bad_customer_id}, {@code bad_event_type}, {@code bad_timestamp} ({@link
 *       EventMillis}, which also bounds the time range), {@code bad_quantity} (its text as
 *       written), {@code bad_properties}, {@code bad_resource}, {@code bad_user_id},
 *       {@code bad_region}, {@code bad_source}.
 * </ol>
 *
 * <p>Every value is walked, not skipped, so the whole document is held to the profile. Numbers
 * keep the text they were written with (an integer {@code -0} reads {@code 0}, as Python's
 * {@code int} prints it); nothing is converted to a binary number. A failure that is not about the
 * document (a bug) gives {@code processing_error}: one record can never stop the job.
 */
final class EventRules {
    static final int MAX_EVENT_BYTES = 64 * 1024;
    static final int MAX_DEPTH = 32;
    static final int MAX_NUMBER_CHARS = 64;
    static final int MAX_EXPONENT_DIGITS = 4;
    static final int MAX_PROPERTIES = 64;

    static final String TOO_LARGE = "too_large";
    static final String MALFORMED_JSON = "malformed_json";
    static final String NOT_AN_OBJECT = "not_an_object";
    static final String HEARTBEAT = "heartbeat";
    /** The verdict on a valid amendment (schemas/amendments.py): not an event, read by the dedup. */
    static final String AMENDMENT = "amendment";
    static final String BAD_AMENDMENT = "bad_amendment";
    static final int MAX_REQUESTED_BY = 128;
    static final int MAX_REASON = 1024;
    static final String PROCESSING_ERROR = "processing_error";

    /** Elements of the result array; the requested properties' values follow from {@link #FIRST_PROPERTY}. */
    static final int VERDICT = 0;
    static final int EVENT_ID = 1;
    static final int CUSTOMER_ID = 2;
    static final int EVENT_TYPE = 3;
    static final int TIMESTAMP = 4;
    static final int QUANTITY = 5;
    static final int PROPERTIES_JSON = 6;
    /** An amendment's action ({@code void} or {@code amend}) and id; null for an event. */
    static final int AMENDMENT_ACTION = 7;
    static final int AMENDMENT_ID = 8;
    static final int FIRST_PROPERTY = 9;

    static final JsonFactory FACTORY =
            JsonFactory.builder()
                    .recyclerPool(JsonRecyclerPools.sharedConcurrentDequePool())
                    .enable(
                            org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.StreamReadFeature
                                    .STRICT_DUPLICATE_DETECTION)
                    .build();

    /** The document is outside the JSON profile (step 2). */
    static final class ProfileException extends IOException {
        ProfileException(String message) {
            super(message);
        }
    }

    /** The schema's fields: index in {@link Fields} by name. */
    private static final String[] FIELD_NAMES = {
        "schema_version", "event_id", "customer_id", "event_type", "timestamp", "quantity", "properties",
        "resource", "user_id", "region", "source", "heartbeat",
        "amendment", "amendment_id", "requested_at", "requested_by", "reason"
    };

    private static final int F_SCHEMA_VERSION = 0;
    private static final int F_EVENT_ID = 1;
    private static final int F_CUSTOMER_ID = 2;
    private static final int F_EVENT_TYPE = 3;
    private static final int F_TIMESTAMP = 4;
    private static final int F_QUANTITY = 5;
    private static final int F_PROPERTIES = 6;
    private static final int F_HEARTBEAT = 11;
    private static final int F_AMENDMENT = 12;
    private static final int F_AMENDMENT_ID = 13;
    private static final int F_REQUESTED_AT = 14;
    private static final int F_REQUESTED_BY = 15;
    private static final int F_REASON = 16;
    /** The members an amendment must have (its quantity too when it amends). */
    private static final int[] AMENDMENT_REQUIRED = {F_AMENDMENT_ID, F_CUSTOMER_ID, F_EVENT_ID, F_REQUESTED_AT};
    /** The event's members an amendment may not have, and the amendment's an event may not have. */
    private static final int[] EVENT_ONLY = {F_EVENT_TYPE, F_TIMESTAMP, F_PROPERTIES, 7, 8, 9, 10, F_HEARTBEAT};
    private static final int[] AMENDMENT_ONLY = {F_AMENDMENT_ID, F_REQUESTED_AT, F_REQUESTED_BY, F_REASON};
    /** The fields an event must have. */
    private static final int[] REQUIRED = {F_EVENT_ID, F_CUSTOMER_ID, F_EVENT_TYPE, F_TIMESTAMP, F_QUANTITY};
    /** The optional string fields, their reasons and their longest lengths (code points). */
    private static final int[] OPTIONAL_STRINGS = {7, 8, 9, 10};
    private static final int[] OPTIONAL_MAX = {256, 128, 64, 128};

    private EventRules() {}

    /** What one pass collects about a document's top-level fields. */
    private static final class Fields {
        final JsonToken[] tokens = new JsonToken[FIELD_NAMES.length]; // null: absent
        final String[] texts = new String[FIELD_NAMES.length]; // scalars' text
        boolean unknownField;
        boolean badProperties;
        /** The properties' scalar values by name, as (token, text); null when properties is not an object. */
        TreeMap<String, Object[]> properties;
    }

    /**
     * Reads {@code doc} into {@code out} ({@link #FIRST_PROPERTY} + {@code names.length} elements,
     * all overwritten): the verdict (null for a valid event, {@code heartbeat}, or a reason), the
     * text of event_id, customer_id, event_type, timestamp and quantity where they are scalars, the
     * properties object as JSON (keys sorted, numbers as written) and the values of the properties
     * {@code names}.
     */
    static void read(byte[] doc, String[] names, String[] out) {
        LastRead last = LAST_READ.get();
        if (last.doc != null && Arrays.equals(last.names, names) && Arrays.equals(last.doc, doc)) {
            System.arraycopy(last.out, 0, out, 0, out.length);
            return;
        }
        last.fields = null;
        Arrays.fill(out, null);
        try {
            out[VERDICT] = readChecked(doc, names, out, last);
        } catch (IOException profile) {
            Arrays.fill(out, null);
            out[VERDICT] = MALFORMED_JSON;
        } catch (RuntimeException | StackOverflowError bug) {
            Arrays.fill(out, null);
            out[VERDICT] = PROCESSING_ERROR;
        }
        last.doc = doc.clone(); // never a buffer the caller may fill again
        last.names = names;
        last.out = out.clone();
    }

    /**
     * The last document this thread read, with the names, what it read and its fields (null unless
     * a valid object): the job's source reads each record several times in a row, for its rowtime
     * ({@link RowtimeMillis}), its fields ({@link ReadEvent}) and its raw row ({@link RawRow}), and
     * this makes the later reads copies instead of parses. Holds one record; compared by content
     * (each call gets its own copy of the bytes).
     */
    private static final class LastRead {
        byte[] doc;
        String[] names;
        String[] out;
        Fields fields;
    }

    private static final ThreadLocal<LastRead> LAST_READ = ThreadLocal.withInitial(LastRead::new);

    private static final String[] NO_NAMES = new String[0];

    /**
     * The row of ClickHouse's {@code raw_events} for a valid event (verdict null), as one line of
     * JSON ({@code JSONEachRow}, the columns of {@code schemas/records.py} RAW_EVENT_COLUMNS), or null
     * for any other record. Its fields come from the same read as the verdict: the event as the
     * Python reference reads it ({@code jobs/loader.py} raw_row before this function; held to it by
     * tests/unit/test_event_agreement.py).
     */
    static String rawRow(byte[] doc, String topic, int partition, long offset, long receivedMillis) {
        LastRead last = LAST_READ.get();
        if (last.doc == null || !Arrays.equals(last.doc, doc)) {
            read(doc, NO_NAMES, new String[FIRST_PROPERTY]);
        }
        Fields f = last.fields;
        if (f == null || last.out[VERDICT] != null) {
            return null;
        }
        Long eventMillis = EventMillis.millis(f.texts[F_TIMESTAMP]);
        if (eventMillis == null) {
            return null; // never for a valid event
        }
        StringBuilder out = new StringBuilder(doc.length * 2 + 256).append('{');
        Json.member(out, "event_id", f.texts[F_EVENT_ID]).append(',');
        Json.member(out, "customer_id", f.texts[F_CUSTOMER_ID]).append(',');
        Json.member(out, "event_type", f.texts[F_EVENT_TYPE]).append(',');
        Json.member(out, "event_time", utcText(eventMillis)).append(',');
        Json.member(out, "quantity", f.texts[F_QUANTITY]).append(',');
        out.append("\"properties\":{");
        if (f.properties != null) {
            boolean first = true;
            for (Map.Entry<String, Object[]> entry : f.properties.entrySet()) {
                if (!first) {
                    out.append(',');
                }
                first = false;
                String text = (String) entry.getValue()[1];
                Json.member(out, entry.getKey(), text == null ? "" : text);
            }
        }
        out.append("},");
        Json.member(out, "resource", orEmpty(f.texts[OPTIONAL_STRINGS[0]])).append(',');
        Json.member(out, "user_id", orEmpty(f.texts[OPTIONAL_STRINGS[1]])).append(',');
        Json.member(out, "region", orEmpty(f.texts[OPTIONAL_STRINGS[2]])).append(',');
        Json.member(out, "source", orEmpty(f.texts[OPTIONAL_STRINGS[3]])).append(',');
        out.append("\"schema_version\":1,");
        Json.member(out, "status", "received").append(',');
        Json.member(out, "kafka_topic", topic).append(',');
        out.append("\"kafka_partition\":").append(partition).append(',');
        out.append("\"kafka_offset\":").append(offset).append(',');
        Json.member(out, "received_at", utcText(receivedMillis)).append(',');
        // valid UTF-8 (checked): the text, escaped, stands for the bytes exactly
        Json.member(out, "payload", new String(doc, StandardCharsets.UTF_8));
        return out.append('}').toString();
    }

    /**
     * Epoch milliseconds as {@code YYYY-MM-DD hh:mm:ss.mmm} in UTC, the text ClickHouse reads into a
     * DateTime64(3) unambiguously (a number such as {@code 0.000} it reads as something else).
     */
    static String utcText(long millis) {
        long days = Math.floorDiv(millis, 86_400_000L);
        long inDay = Math.floorMod(millis, 86_400_000L);
        // civil from days (H. Hinnant's algorithm), proleptic Gregorian
        long z = days + 719_468L;
        long era = Math.floorDiv(z, 146_097L);
        long doe = z - era * 146_097L;
        long yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        long doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        long mp = (5 * doy + 2) / 153;
        long day = doy - (153 * mp + 2) / 5 + 1;
        long month = mp < 10 ? mp + 3 : mp - 9;
        long year = yoe + era * 400 + (month <= 2 ? 1 : 0);
        char[] text = new char[23];
        digits(text, 0, year, 4);
        text[4] = '-';
        digits(text, 5, month, 2);
        text[7] = '-';
        digits(text, 8, day, 2);
        text[10] = ' ';
        digits(text, 11, inDay / 3_600_000L, 2);
        text[13] = ':';
        digits(text, 14, inDay / 60_000L % 60, 2);
        text[16] = ':';
        digits(text, 17, inDay / 1000L % 60, 2);
        text[19] = '.';
        digits(text, 20, inDay % 1000L, 3);
        return new String(text);
    }

    private static void digits(char[] text, int at, long value, int width) {
        for (int i = at + width - 1; i >= at; i--) {
            text[i] = (char) ('0' + value % 10);
            value /= 10;
        }
    }

    private static String orEmpty(String text) {
        return text == null ? "" : text;
    }

    private static String readChecked(byte[] doc, String[] names, String[] out, LastRead last) throws IOException {
        if (doc.length > MAX_EVENT_BYTES) {
            return TOO_LARGE;
        }
        boolean surrogateEscape = checkEncoding(doc);
        try (JsonParser parser = FACTORY.createParser(doc)) {
            JsonToken root = parser.nextToken();
            if (root == null) {
                throw new ProfileException("no JSON value");
            }
            Walker walker = new Walker(parser, surrogateEscape);
            Fields fields = root == JsonToken.START_OBJECT ? walker.event() : null;
            if (fields == null) {
                walker.value(root, 1);
            }
            if (parser.nextToken() != null) {
                throw new ProfileException("more than one JSON value");
            }
            if (fields == null) {
                return NOT_AN_OBJECT;
            }
            fill(fields, names, out);
            last.fields = fields;
            return verdict(fields);
        }
    }

    /**
     * Strict UTF-8 without a byte-order mark (as Python's {@code bytes.decode('utf-8')}: no
     * overlong forms, no encoded surrogates), and no NUL byte. Returns whether the text holds a {@code \\u}
     * escape of a surrogate, the only way a lone one can reach a string.
     */
    private static boolean checkEncoding(byte[] doc) throws ProfileException {
        if (doc.length >= 3 && doc[0] == (byte) 0xEF && doc[1] == (byte) 0xBB && doc[2] == (byte) 0xBF) {
            throw new ProfileException("byte-order mark");
        }
        boolean ascii = true;
        boolean surrogateEscape = false;
        for (int i = 0; i < doc.length; i++) {
            byte b = doc[i];
            if (b < 0) {
                ascii = false;
            } else if (b == 0) {
                // Never in a JSON text (a raw control character); and Jackson would read bytes with
                // NULs as UTF-16 or UTF-32, which the profile does not allow.
                throw new ProfileException("a NUL byte");
            } else if (b == '\\' && i + 3 < doc.length && doc[i + 1] == 'u' && (doc[i + 2] | 0x20) == 'd') {
                int c = doc[i + 3] | 0x20;
                surrogateEscape |= c == '8' || c == '9' || c >= 'a' && c <= 'f';
            }
        }
        if (!ascii) {
            try {
                StandardCharsets.UTF_8
                        .newDecoder()
                        .onMalformedInput(CodingErrorAction.REPORT)
                        .onUnmappableCharacter(CodingErrorAction.REPORT)
                        .decode(ByteBuffer.wrap(doc));
            } catch (CharacterCodingException invalid) {
                throw new ProfileException("not UTF-8");
            }
        }
        return surrogateEscape;
    }

    /** Walks values, holding them to the profile. */
    private static final class Walker {
        final JsonParser parser;
        final boolean surrogateEscape;

        Walker(JsonParser parser, boolean surrogateEscape) {
            this.parser = parser;
            this.surrogateEscape = surrogateEscape;
        }

        /** The root object (its START_OBJECT read), field by field. */
        Fields event() throws IOException {
            Fields fields = new Fields();
            JsonToken token;
            while ((token = parser.nextToken()) == JsonToken.FIELD_NAME) {
                String name = name();
                JsonToken value = parser.nextToken();
                int field = fieldIndex(name);
                if (field < 0) {
                    fields.unknownField = true;
                    value(value, 2);
                } else if (field == F_PROPERTIES && value == JsonToken.START_OBJECT) {
                    fields.tokens[field] = value;
                    fields.properties = properties(fields);
                } else {
                    fields.tokens[field] = value;
                    fields.texts[field] = value(value, 2);
                    if (field == F_PROPERTIES) {
                        fields.badProperties = true;
                    }
                }
            }
            expectEnd(token, JsonToken.END_OBJECT);
            return fields;
        }

        /** The properties object (its START_OBJECT read, at depth 2). */
        TreeMap<String, Object[]> properties(Fields fields) throws IOException {
            TreeMap<String, Object[]> values = new TreeMap<>();
            JsonToken token;
            while ((token = parser.nextToken()) == JsonToken.FIELD_NAME) {
                String name = name();
                JsonToken value = parser.nextToken();
                String text = value(value, 3);
                if (value == JsonToken.START_OBJECT || value == JsonToken.START_ARRAY || !propertyName(name)) {
                    fields.badProperties = true;
                }
                values.put(name, new Object[] {value, text});
            }
            expectEnd(token, JsonToken.END_OBJECT);
            if (values.size() > MAX_PROPERTIES) {
                fields.badProperties = true;
            }
            return values;
        }

        /**
         * Walks the value starting at {@code token}, a container at nesting {@code depth}; returns
         * a scalar's text (null for a JSON null and for containers).
         */
        String value(JsonToken token, int depth) throws IOException {
            switch (token) {
                case START_OBJECT:
                case START_ARRAY:
                    if (depth > MAX_DEPTH) {
                        throw new ProfileException("nested more than " + MAX_DEPTH + " deep");
                    }
                    JsonToken end = token == JsonToken.START_OBJECT ? JsonToken.END_OBJECT : JsonToken.END_ARRAY;
                    JsonToken next;
                    while ((next = parser.nextToken()) != end) {
                        if (next == null) {
                            throw new ProfileException("unexpected end");
                        }
                        if (next == JsonToken.FIELD_NAME) {
                            name();
                        } else {
                            value(next, depth + 1);
                        }
                    }
                    return null;
                case VALUE_STRING:
                    String text = parser.getText();
                    if (surrogateEscape) {
                        checkSurrogates(text);
                    }
                    return text;
                case VALUE_NUMBER_INT:
                case VALUE_NUMBER_FLOAT:
                    String number = parser.getText();
                    if (number.length() > MAX_NUMBER_CHARS) {
                        throw new ProfileException("a number of " + number.length() + " characters");
                    }
                    if (token == JsonToken.VALUE_NUMBER_FLOAT && exponentDigits(number) > MAX_EXPONENT_DIGITS) {
                        throw new ProfileException("an exponent of more than " + MAX_EXPONENT_DIGITS + " digits");
                    }
                    return token == JsonToken.VALUE_NUMBER_INT && number.equals("-0") ? "0" : number;
                case VALUE_TRUE:
                    return "true";
                case VALUE_FALSE:
                    return "false";
                case VALUE_NULL:
                    return null;
                default:
                    throw new ProfileException("unexpected token " + token);
            }
        }

        private String name() throws IOException {
            String name = parser.currentName();
            if (surrogateEscape) {
                checkSurrogates(name);
            }
            return name;
        }

        private static void expectEnd(JsonToken token, JsonToken end) throws ProfileException {
            if (token != end) {
                throw new ProfileException("unexpected token " + token);
            }
        }
    }

    /** Digits of a number's exponent (0 without one). */
    private static int exponentDigits(String number) {
        int e = Math.max(number.indexOf('e'), number.indexOf('E'));
        if (e < 0) {
            return 0;
        }
        int start = e + 1 < number.length() && (number.charAt(e + 1) == '+' || number.charAt(e + 1) == '-') ? e + 2 : e + 1;
        return number.length() - start;
    }

    private static void checkSurrogates(String text) throws ProfileException {
        for (int i = 0; i < text.length(); i++) {
            char c = text.charAt(i);
            if (Character.isHighSurrogate(c) && i + 1 < text.length() && Character.isLowSurrogate(text.charAt(i + 1))) {
                i++;
            } else if (Character.isSurrogate(c)) {
                throw new ProfileException("a lone surrogate");
            }
        }
    }

    private static int fieldIndex(String name) {
        for (int i = 0; i < FIELD_NAMES.length; i++) {
            if (FIELD_NAMES[i].equals(name)) {
                return i;
            }
        }
        return -1;
    }

    private static void fill(Fields fields, String[] names, String[] out) throws IOException {
        out[EVENT_ID] = fields.texts[F_EVENT_ID];
        out[CUSTOMER_ID] = fields.texts[F_CUSTOMER_ID];
        out[EVENT_TYPE] = fields.texts[F_EVENT_TYPE];
        out[TIMESTAMP] = fields.texts[F_TIMESTAMP];
        out[QUANTITY] = fields.texts[F_QUANTITY];
        if (fields.tokens[F_AMENDMENT] != null) {
            out[AMENDMENT_ACTION] = fields.texts[F_AMENDMENT];
            out[AMENDMENT_ID] = fields.texts[F_AMENDMENT_ID];
            return; // an amendment has no properties (a valid one)
        }
        if (fields.properties != null) {
            out[PROPERTIES_JSON] = propertiesJson(fields.properties);
            for (int i = 0; i < names.length; i++) {
                Object[] value = fields.properties.get(names[i]);
                out[FIRST_PROPERTY + i] = value == null ? null : (String) value[1];
            }
        }
    }

    /** The properties as JSON: keys sorted, numbers as written, scalars only (containers as null). */
    private static String propertiesJson(TreeMap<String, Object[]> properties) throws IOException {
        StringWriter writer = new StringWriter();
        try (JsonGenerator generator = FACTORY.createGenerator(writer)) {
            generator.writeStartObject();
            for (Map.Entry<String, Object[]> entry : properties.entrySet()) {
                generator.writeFieldName(entry.getKey());
                JsonToken token = (JsonToken) entry.getValue()[0];
                String text = (String) entry.getValue()[1];
                if (token == JsonToken.VALUE_STRING) {
                    generator.writeString(text);
                } else if (text == null) {
                    generator.writeNull();
                } else {
                    generator.writeRawValue(text); // a number as written, true or false
                }
            }
            generator.writeEndObject();
        }
        return writer.toString();
    }

    private static String verdict(Fields f) {
        if (f.tokens[F_AMENDMENT] != null) {
            return amendmentVerdict(f);
        }
        JsonToken heartbeat = f.tokens[F_HEARTBEAT];
        boolean marked =
                heartbeat == JsonToken.VALUE_TRUE
                        || heartbeat == JsonToken.VALUE_STRING && "true".equals(f.texts[F_HEARTBEAT]);
        JsonToken eventId = f.tokens[F_EVENT_ID];
        if (marked && (eventId == null || eventId == JsonToken.VALUE_NULL)) {
            JsonToken timestamp = f.tokens[F_TIMESTAMP];
            if (timestamp == null || timestamp == JsonToken.VALUE_NULL) {
                return "missing_field";
            }
            return timestamp == JsonToken.VALUE_STRING && EventMillis.millis(f.texts[F_TIMESTAMP]) != null
                    ? HEARTBEAT
                    : "bad_timestamp";
        }
        for (int required : REQUIRED) {
            if (f.tokens[required] == null) {
                return "missing_field";
            }
        }
        if (f.unknownField || f.tokens[F_HEARTBEAT] != null || anyPresent(f, AMENDMENT_ONLY)) {
            return "unknown_field";
        }
        if (f.tokens[F_SCHEMA_VERSION] != null
                && !(f.tokens[F_SCHEMA_VERSION] == JsonToken.VALUE_NUMBER_INT && "1".equals(f.texts[F_SCHEMA_VERSION]))) {
            return "bad_schema_version";
        }
        if (!isString(f, F_EVENT_ID) || !eventId(f.texts[F_EVENT_ID])) {
            return "bad_event_id";
        }
        if (!isString(f, F_CUSTOMER_ID) || !customerId(f.texts[F_CUSTOMER_ID])) {
            return "bad_customer_id";
        }
        if (!isString(f, F_EVENT_TYPE) || !eventType(f.texts[F_EVENT_TYPE])) {
            return "bad_event_type";
        }
        if (!isString(f, F_TIMESTAMP) || EventMillis.millis(f.texts[F_TIMESTAMP]) == null) {
            return "bad_timestamp";
        }
        if (!quantity(f)) {
            return "bad_quantity";
        }
        if (f.badProperties) {
            return "bad_properties";
        }
        for (int i = 0; i < OPTIONAL_STRINGS.length; i++) {
            int field = OPTIONAL_STRINGS[i];
            if (f.tokens[field] != null
                    && (!isString(f, field) || codePoints(f.texts[field]) > OPTIONAL_MAX[i])) {
                return "bad_" + FIELD_NAMES[field];
            }
        }
        return null;
    }

    /** A quantity as written: a string or a number whose text is {@link #decimal38}. */
    private static boolean quantity(Fields f) {
        JsonToken quantity = f.tokens[F_QUANTITY];
        boolean quantityText =
                quantity == JsonToken.VALUE_STRING
                        || quantity == JsonToken.VALUE_NUMBER_INT
                        || quantity == JsonToken.VALUE_NUMBER_FLOAT;
        return quantityText && decimal38(f.texts[F_QUANTITY]);
    }

    /**
     * The verdict on a record with an {@code amendment} member: {@link #AMENDMENT} or the reason, in
     * the order of schemas/amendments.py.
     */
    private static String amendmentVerdict(Fields f) {
        String action = isString(f, F_AMENDMENT) ? f.texts[F_AMENDMENT] : null;
        boolean amend = "amend".equals(action);
        if (!amend && !"void".equals(action)) {
            return BAD_AMENDMENT;
        }
        for (int required : AMENDMENT_REQUIRED) {
            if (f.tokens[required] == null) {
                return "missing_field";
            }
        }
        if (amend && f.tokens[F_QUANTITY] == null) {
            return "missing_field";
        }
        if (f.unknownField || anyPresent(f, EVENT_ONLY) || !amend && f.tokens[F_QUANTITY] != null) {
            return "unknown_field";
        }
        if (f.tokens[F_SCHEMA_VERSION] != null
                && !(f.tokens[F_SCHEMA_VERSION] == JsonToken.VALUE_NUMBER_INT && "1".equals(f.texts[F_SCHEMA_VERSION]))) {
            return "bad_schema_version";
        }
        if (!isString(f, F_AMENDMENT_ID) || !eventId(f.texts[F_AMENDMENT_ID])) {
            return BAD_AMENDMENT;
        }
        if (f.tokens[F_REQUESTED_BY] != null
                && (!isString(f, F_REQUESTED_BY) || codePoints(f.texts[F_REQUESTED_BY]) > MAX_REQUESTED_BY)) {
            return BAD_AMENDMENT;
        }
        if (f.tokens[F_REASON] != null && (!isString(f, F_REASON) || codePoints(f.texts[F_REASON]) > MAX_REASON)) {
            return BAD_AMENDMENT;
        }
        if (!isString(f, F_EVENT_ID) || !eventId(f.texts[F_EVENT_ID])) {
            return "bad_event_id";
        }
        if (!isString(f, F_CUSTOMER_ID) || !customerId(f.texts[F_CUSTOMER_ID])) {
            return "bad_customer_id";
        }
        if (!isString(f, F_REQUESTED_AT) || EventMillis.millis(f.texts[F_REQUESTED_AT]) == null) {
            return "bad_timestamp";
        }
        if (amend && !quantity(f)) {
            return "bad_quantity";
        }
        return AMENDMENT;
    }

    private static boolean anyPresent(Fields f, int[] fields) {
        for (int field : fields) {
            if (f.tokens[field] != null) {
                return true;
            }
        }
        return false;
    }

    private static boolean isString(Fields f, int field) {
        return f.tokens[field] == JsonToken.VALUE_STRING;
    }

    private static int codePoints(String text) {
        return text.codePointCount(0, text.length());
    }

    /** 1–128 code points, no control character (U+0000–U+001F, U+007F). */
    static boolean eventId(String text) {
        int length = codePoints(text);
        if (length < 1 || length > 128) {
            return false;
        }
        for (int i = 0; i < text.length(); i++) {
            char c = text.charAt(i);
            if (c < 0x20 || c == 0x7F) {
                return false;
            }
        }
        return true;
    }

    /** {@code [A-Za-z0-9][A-Za-z0-9._:@-]*}, at most 128. */
    static boolean customerId(String text) {
        if (text.isEmpty() || text.length() > 128 || !alnum(text.charAt(0))) {
            return false;
        }
        for (int i = 1; i < text.length(); i++) {
            char c = text.charAt(i);
            if (!alnum(c) && ".-_:@".indexOf(c) < 0) {
                return false;
            }
        }
        return true;
    }

    /** {@code [a-z0-9][a-z0-9_.-]*}, at most 64. */
    static boolean eventType(String text) {
        if (text.isEmpty() || text.length() > 64 || !lowerOrDigit(text.charAt(0))) {
            return false;
        }
        for (int i = 1; i < text.length(); i++) {
            char c = text.charAt(i);
            if (!lowerOrDigit(c) && "_.-".indexOf(c) < 0) {
                return false;
            }
        }
        return true;
    }

    /** A property name: {@code [A-Za-z_][A-Za-z0-9_.-]{0,63}}. */
    static boolean propertyName(String text) {
        if (text.isEmpty() || text.length() > 64 || !(alpha(text.charAt(0)) || text.charAt(0) == '_')) {
            return false;
        }
        for (int i = 1; i < text.length(); i++) {
            char c = text.charAt(i);
            if (!alnum(c) && "_.-".indexOf(c) < 0) {
                return false;
            }
        }
        return true;
    }

    /**
     * {@code -?(0|[1-9][0-9]{0,28})(\.[0-9]{1,9})?}: a quantity (schemas/validate.py), exactly
     * what ClickHouse Decimal(38, 9) holds.
     */
    static boolean decimal38(String text) {
        int i = 0;
        int length = text.length();
        if (i < length && text.charAt(i) == '-') {
            i++;
        }
        int start = i;
        while (i < length && digit(text.charAt(i))) {
            i++;
        }
        int integerDigits = i - start;
        if (integerDigits == 0 || integerDigits > 29 || integerDigits > 1 && text.charAt(start) == '0') {
            return false;
        }
        if (i == length) {
            return true;
        }
        if (text.charAt(i) != '.') {
            return false;
        }
        int fractionStart = ++i;
        while (i < length && digit(text.charAt(i))) {
            i++;
        }
        int fractionDigits = i - fractionStart;
        return i == length && fractionDigits >= 1 && fractionDigits <= 9;
    }

    private static boolean digit(char c) {
        return c >= '0' && c <= '9';
    }

    private static boolean alpha(char c) {
        return c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z';
    }

    private static boolean alnum(char c) {
        return alpha(c) || digit(c);
    }

    private static boolean lowerOrDigit(char c) {
        return c >= 'a' && c <= 'z' || digit(c);
    }
}
