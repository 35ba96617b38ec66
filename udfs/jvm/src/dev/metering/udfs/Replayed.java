package dev.metering.udfs;

import java.util.HashMap;
import java.util.Iterator;
import java.util.Map;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.JsonNode;
import org.apache.flink.table.functions.FunctionContext;
import org.apache.flink.table.functions.ScalarFunction;

/**
 * {@code metering_replayed(partition, offset)}: whether a record is replayed to rebuild state, i.e. a
 * job this one replaces had already processed it (its offset is below that job's committed offset
 * for the partition).
 *
 * <p>A job started by {@code metering job upgrade} reads the events topic again from before the
 * oldest open billing period (and the dedup retention) so that its dedup state, windows and
 * ledgers hold everything the old job's did. Its outputs for replayed records were already
 * written by the old job: the job drops their dead letters, duplicates and corrections
 * (jobs/sql.py). The offsets come from the job parameter {@link #PARAMETER} (base64 of a JSON
 * object, partition → offset); without it nothing is replayed.
 */
public final class Replayed extends ScalarFunction {
    /** Job parameter: base64 of {@code {"<partition>": <first offset not replayed>, …}}. */
    public static final String PARAMETER = "metering.rebuild.until";

    private transient Map<Integer, Long> until;

    @Override
    public void open(FunctionContext context) throws Exception {
        until = new HashMap<>();
        JsonNode root = Json.jobParameter(context, PARAMETER);
        if (root == null) {
            return;
        }
        for (Iterator<Map.Entry<String, JsonNode>> it = root.fields(); it.hasNext(); ) {
            Map.Entry<String, JsonNode> entry = it.next();
            until.put(Integer.valueOf(entry.getKey()), entry.getValue().asLong());
        }
    }

    public boolean eval(Integer partition, Long offset) {
        if (until.isEmpty() || partition == null || offset == null) {
            return false;
        }
        Long first = until.get(partition);
        return first != null && offset < first;
    }
}
