package dev.metering.udfs;

import org.apache.flink.table.annotation.DataTypeHint;
import org.apache.flink.table.functions.ScalarFunction;

import java.util.Arrays;
import java.util.Base64;

/**
 * {@code metering_dead_letter_payload(payload, cap)}: what a dead letter carries of a record, the
 * base64 of its first {@code cap} bytes, exactly as read from Kafka (whatever they hold: invalid
 * UTF-8 included). {@code metering_byte_length(payload)} gives the record's whole size, so a
 * reader can tell a truncated payload.
 */
public final class DeadLetterPayload extends ScalarFunction {
    public String eval(byte[] payload, Integer cap) {
        if (payload == null || cap == null) {
            return null;
        }
        byte[] kept = payload.length <= cap ? payload : Arrays.copyOf(payload, Math.max(0, cap));
        return Base64.getEncoder().encodeToString(kept);
    }

    /** {@code metering_byte_length(payload)}. */
    public static final class ByteLength extends ScalarFunction {
        public @DataTypeHint("INT") Integer eval(byte[] payload) {
            return payload == null ? null : payload.length;
        }
    }
}
