package dev.metering.udfs;

import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonGenerator;

import java.io.BufferedOutputStream;
import java.io.DataInputStream;
import java.io.EOFException;
import java.io.IOException;
import java.io.OutputStreamWriter;
import java.nio.charset.StandardCharsets;

/**
 * The job's reading of records, outside Flink, for the agreement tests
 * (tests/unit/test_event_agreement.py): reads records from standard input, each a 4-byte
 * big-endian length and that many bytes, and writes one JSON array per record and line: what
 * {@link ReadEvent} returns for it (the arguments are the property names), then the event time in
 * epoch milliseconds ({@link EventMillis}) of its timestamp text.
 */
public final class EventVerdicts {
    private EventVerdicts() {}

    /** The Kafka coordinates every raw line is written with (tests/unit/test_event_agreement.py, RAW_AT). */
    static final String RAW_TOPIC = "usage-events";

    static final int RAW_PARTITION = 3;
    static final long RAW_OFFSET = 42L;
    static final long RAW_RECEIVED_MILLIS = 1_767_225_600_123L;

    public static void main(String[] args) throws IOException {
        DataInputStream in = new DataInputStream(System.in);
        ReadEvent reader = new ReadEvent();
        OutputStreamWriter out = new OutputStreamWriter(new BufferedOutputStream(System.out), StandardCharsets.UTF_8);
        while (true) {
            int length;
            try {
                length = in.readInt();
            } catch (EOFException end) {
                break;
            }
            byte[] record = new byte[length];
            in.readFully(record);
            String[] values = reader.eval(record, args);
            JsonGenerator generator = EventRules.FACTORY.createGenerator(out);
            generator.writeStartArray();
            for (String value : values) {
                generator.writeString(value);
            }
            Long millis = EventMillis.millis(values[EventRules.TIMESTAMP]);
            if (millis == null) {
                generator.writeNull();
            } else {
                generator.writeNumber(millis);
            }
            // the raw_events line of a valid event (EventRules.rawRow), at fixed Kafka coordinates
            generator.writeString(EventRules.rawRow(record, RAW_TOPIC, RAW_PARTITION, RAW_OFFSET, RAW_RECEIVED_MILLIS));
            generator.writeEndArray();
            generator.flush();
            out.write('\n');
            if (in.available() == 0) {
                out.flush(); // the reader waits for this line before it writes more
            }
        }
        out.flush();
    }
}
