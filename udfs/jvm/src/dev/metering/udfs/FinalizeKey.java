package dev.metering.udfs;

import org.apache.flink.api.common.functions.MapFunction;
import org.apache.flink.api.java.tuple.Tuple3;
import org.apache.flink.types.Row;

/**
 * A partial row (jobs/sql.PARTIAL_COLUMNS) as {@code Row(Tuple3(customer_id, meter, group_key), row)}:
 * the shape PyFlink's {@code key_by} produces for a keyed Python function, built here in the JVM.
 *
 * <p>PyFlink computes that key with a Python function: one more call into Python per row, which
 * converts the whole row on the way in and out (docs/benchmarks.md, "The finalization operator's
 * Python calls"). The key and record types are the ones PyFlink's {@code key_by} declares, so the
 * finalization operator's keyed state keeps its serializers and savepoints restore across the change.
 */
public final class FinalizeKey implements MapFunction<Row, Row> {
    private static final long serialVersionUID = 1L;

    @Override
    public Row map(Row row) {
        return Row.of(Tuple3.of((String) row.getField(0), (String) row.getField(1), (String) row.getField(2)), row);
    }
}
