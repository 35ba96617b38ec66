package dev.metering.udfs;

import dev.metering.rules.Aggregation;
import dev.metering.rules.PeriodLedger;
import dev.metering.rules.Periods;
import java.io.DataInput;
import java.io.DataOutput;
import java.io.IOException;
import java.util.HashMap;
import java.util.Iterator;
import java.util.Map;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.JsonNode;

/**
 * What {@link Finalize} needs of the configuration: each meter's aggregation and each customer's
 * billing policy (the default, or the customer's own). Written by jobs/metering_job.py
 * ({@code finalize_settings}) as JSON: {@code {"meters": {name: aggregation}, "default": policy,
 * "customers": {customer_id: policy}, "finalized_through_ms": ms or null}}, a policy being
 * {@code {"kind", "zone", "anchor", "grace_ms"}}.
 */
final class FinalizeSettings {
    private final Map<String, Aggregation> meters;
    private final Policy defaultPolicy;
    private final Map<String, Policy> customers;
    /**
     * Every period whose end + grace is at or behind this is final (the job this one replaced
     * finalized it; jobs/upgrade.py); {@code Long.MIN_VALUE} when there is no such job.
     */
    final long finalizedThrough;

    private FinalizeSettings(
            Map<String, Aggregation> meters, Policy defaultPolicy, Map<String, Policy> customers, long finalizedThrough) {
        this.meters = meters;
        this.defaultPolicy = defaultPolicy;
        this.customers = customers;
        this.finalizedThrough = finalizedThrough;
    }

    static FinalizeSettings parse(JsonNode root) {
        Map<String, Aggregation> meters = new HashMap<>();
        for (Iterator<Map.Entry<String, JsonNode>> it = root.get("meters").fields(); it.hasNext(); ) {
            Map.Entry<String, JsonNode> meter = it.next();
            meters.put(meter.getKey(), Aggregation.of(meter.getValue().asText()));
        }
        Map<String, Policy> customers = new HashMap<>();
        for (Iterator<Map.Entry<String, JsonNode>> it = root.get("customers").fields(); it.hasNext(); ) {
            Map.Entry<String, JsonNode> customer = it.next();
            customers.put(customer.getKey(), Policy.of(customer.getValue()));
        }
        JsonNode through = root.get("finalized_through_ms");
        long finalizedThrough = through == null || through.isNull() ? Long.MIN_VALUE : through.asLong();
        return new FinalizeSettings(meters, Policy.of(root.get("default")), customers, finalizedThrough);
    }

    /** The settings of one (customer, meter, group) key; throws for a meter the job does not have. */
    KeySettings forKey(String customer, String meter, String groupKey) {
        Aggregation aggregation = meters.get(meter);
        if (aggregation == null) {
            throw new IllegalArgumentException("no meter named " + meter + " in this job's configuration");
        }
        return new KeySettings(customer, meter, groupKey, aggregation, customers.getOrDefault(customer, defaultPolicy));
    }

    /** How a customer is billed: period kind, zone and anchor, and the grace window. */
    static final class Policy {
        final String kind;
        final String zone;
        final int anchor;
        final long graceMs;
        /** One-entry cache of the local day's start: rows of a key come minute after minute. */
        private long dayMinute = Long.MIN_VALUE;
        private long dayStart;

        Policy(String kind, String zone, int anchor, long graceMs) {
            this.kind = kind;
            this.zone = zone;
            this.anchor = anchor;
            this.graceMs = graceMs;
        }

        static Policy of(JsonNode node) {
            return new Policy(node.get("kind").asText(), node.get("zone").asText(), node.get("anchor").asInt(), node.get("grace_ms").asLong());
        }

        long localDayStart(long minuteMs) {
            if (minuteMs != dayMinute) {
                dayStart = Periods.localDayStart(minuteMs, zone);
                dayMinute = minuteMs;
            }
            return dayStart;
        }
    }

    /** One key and how it is billed. Stored with the key's state, like the Python ledger kept its cycle. */
    static final class KeySettings {
        final String customer;
        final String meter;
        final String groupKey;
        final Aggregation aggregation;
        final Policy policy;

        KeySettings(String customer, String meter, String groupKey, Aggregation aggregation, Policy policy) {
            this.customer = customer;
            this.meter = meter;
            this.groupKey = groupKey;
            this.aggregation = aggregation;
            this.policy = policy;
        }

        PeriodLedger newLedger() {
            return new PeriodLedger(aggregation, policy.kind, policy.zone, policy.anchor, policy.graceMs);
        }

        PeriodLedger readLedger(DataInput in) throws IOException {
            return PeriodLedger.read(aggregation, policy.kind, policy.zone, policy.anchor, policy.graceMs, in);
        }

        long localDayStart(long minuteMs) {
            return policy.localDayStart(minuteMs);
        }

        void write(DataOutput out) throws IOException {
            out.writeUTF(customer);
            out.writeUTF(meter);
            out.writeUTF(groupKey);
            out.writeUTF(aggregation.wire());
            out.writeUTF(policy.kind);
            out.writeUTF(policy.zone);
            out.writeInt(policy.anchor);
            out.writeLong(policy.graceMs);
        }

        static KeySettings read(DataInput in) throws IOException {
            String customer = in.readUTF();
            String meter = in.readUTF();
            String groupKey = in.readUTF();
            Aggregation aggregation = Aggregation.of(in.readUTF());
            Policy policy = new Policy(in.readUTF(), in.readUTF(), in.readInt(), in.readLong());
            return new KeySettings(customer, meter, groupKey, aggregation, policy);
        }
    }
}
