package dev.metering.udfs;

import org.apache.flink.table.functions.ScalarFunction;

/**
 * {@code metering_is_decimal(text)}: whether {@code text} is an exact decimal ClickHouse
 * Decimal(38, 9) holds, {@code -?(0|[1-9][0-9]{0,28})(\.[0-9]{1,9})?} and nothing else (a SQL
 * {@code REGEXP} with {@code $} would also match before a trailing line feed). The rule of a
 * quantity (schemas/validate.py), for meters' values read from properties.
 */
public final class IsDecimal extends ScalarFunction {
    public Boolean eval(String text) {
        return text == null ? null : EventRules.decimal38(text);
    }
}
