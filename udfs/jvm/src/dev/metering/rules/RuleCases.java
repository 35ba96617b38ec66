package dev.metering.rules;

import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.JsonNode;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.ObjectMapper;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.node.ArrayNode;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.node.JsonNodeFactory;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.node.ObjectNode;

import java.io.BufferedReader;
import java.io.BufferedWriter;
import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.OutputStreamWriter;
import java.math.BigDecimal;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HexFormat;
import java.util.List;

/**
 * Runs the rule classes on cases read from stdin, one JSON object per line, and writes one JSON
 * result per line (flushed), so {@code tests/unit/test_rules_agreement.py} can hold them to the
 * Python reference with one JVM for the whole module. Not used by the job.
 *
 * <p>Cases ({@code op}): {@code aggregation} (wire name), {@code period}, {@code local_day},
 * {@code partials} (inputs, then merge steps on a growing register list) and {@code ledger} (a
 * sequence of ledger calls; {@code restore} reads a stored ledger given as hex, any format
 * {@link PeriodLedger#read} accepts). A partial travels as Python's {@code encode} tuple
 * {@code [count, total, extreme, distinct, latest]}; a result partial comes back as that tuple plus
 * {@code result()}, the {@code appendJson} text and whether a binary state round trip kept it equal.
 * A case that throws answers {@code {"error": ...}}.
 */
public final class RuleCases {
    private static final ObjectMapper JSON = new ObjectMapper();
    private static final JsonNodeFactory NODES = JsonNodeFactory.instance;

    private RuleCases() {}

    public static void main(String[] args) throws IOException {
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        BufferedWriter out = new BufferedWriter(new OutputStreamWriter(System.out, StandardCharsets.UTF_8));
        for (String line = in.readLine(); line != null; line = in.readLine()) {
            JsonNode answer;
            try {
                answer = run(JSON.readTree(line));
            } catch (RuntimeException | IOException e) {
                answer = error(e);
            }
            out.write(JSON.writeValueAsString(answer));
            out.write('\n');
            out.flush();
        }
    }

    private static JsonNode run(JsonNode c) throws IOException {
        return switch (c.get("op").asText()) {
            case "aggregation" -> aggregation(c.get("wire").asText());
            case "period" -> pair(Periods.billingPeriod(
                    c.get("instant").asLong(), c.get("kind").asText(), c.get("zone").asText(), c.get("anchor").asInt()));
            case "local_day" -> NODES.numberNode(Periods.localDayStart(c.get("instant").asLong(), c.get("zone").asText()));
            case "partials" -> partials(Aggregation.of(c.get("aggregation").asText()), c);
            case "ledger" -> ledger(c);
            default -> throw new IllegalArgumentException("unknown op " + c.get("op"));
        };
    }

    private static JsonNode aggregation(String wire) {
        Aggregation a = Aggregation.of(wire);
        return NODES.textNode(a.wire());
    }

    private static JsonNode partials(Aggregation a, JsonNode c) throws IOException {
        List<Partial> registers = new ArrayList<>();
        ArrayNode inputs = NODES.arrayNode();
        for (JsonNode encoded : c.get("inputs")) {
            Partial p = partial(a, encoded);
            registers.add(p);
            inputs.add(describe(p));
        }
        ArrayNode steps = NODES.arrayNode();
        for (JsonNode step : c.get("steps")) {
            Partial x = registers.get(step.get(1).asInt() % registers.size());
            try {
                Partial made = switch (step.get(0).asText()) {
                    case "merge" -> x.merge(registers.get(step.get(2).asInt() % registers.size()));
                    default -> throw new IllegalStateException("unknown step " + step);
                };
                registers.add(made);
                steps.add(describe(made));
            } catch (IllegalArgumentException e) {
                steps.add("error");
            }
        }
        return NODES.objectNode().<ObjectNode>set("inputs", inputs).set("steps", steps);
    }

    private static JsonNode ledger(JsonNode c) throws IOException {
        Aggregation a = Aggregation.of(c.get("aggregation").asText());
        String kind = c.get("kind").asText();
        String zone = c.get("zone").asText();
        int anchor = c.get("anchor").asInt();
        long graceMs = c.get("grace_ms").asLong();
        PeriodLedger ledger = new PeriodLedger(a, kind, zone, anchor, graceMs);
        ArrayNode answers = NODES.arrayNode();
        for (JsonNode op : c.get("ops")) {
            String name = op.fieldNames().next();
            JsonNode arg = op.get(name);
            switch (name) {
                case "apply" -> {
                    PeriodLedger.Correction correction =
                            ledger.apply(arg.get(0).asLong(), partial(a, arg.get(1)), arg.get(2).asLong());
                    answers.add(correction == null
                            ? NODES.nullNode()
                            : NODES.arrayNode()
                                    .add(correction.periodStartMs())
                                    .add(correction.periodEndMs())
                                    .add(correction.minuteMs())
                                    .add(describe(correction.partial())));
                }
                case "finalize" -> {
                    ArrayNode finals = NODES.arrayNode();
                    for (PeriodLedger.Final f : ledger.finalize(arg.asLong())) {
                        finals.add(NODES.arrayNode()
                                .add(f.periodStartMs())
                                .add(f.periodEndMs())
                                .add(describe(f.partial()))
                                .add(f.finalizedAtWatermarkMs()));
                    }
                    answers.add(finals);
                }
                case "roundtrip" -> {
                    byte[] stored = bytes(ledger);
                    ledger = PeriodLedger.read(a, kind, zone, anchor, graceMs, new DataInputStream(new ByteArrayInputStream(stored)));
                    answers.add(Arrays.equals(stored, bytes(ledger)));
                }
                case "restore" -> {
                    byte[] stored = HexFormat.of().parseHex(arg.asText());
                    ledger = PeriodLedger.read(a, kind, zone, anchor, graceMs, new DataInputStream(new ByteArrayInputStream(stored)));
                    answers.add(true);
                }
                case "period" -> answers.add(pair(ledger.periodOf(arg.asLong())));
                case "open" -> answers.add(ledger.isOpen(arg.asLong()));
                case "has_open" -> answers.add(ledger.hasOpenPeriods());
                case "is_final" -> answers.add(ledger.isFinal(arg.get(0).asLong(), arg.get(1).asLong()));
                default -> throw new IllegalArgumentException("unknown ledger op " + name);
            }
        }
        return answers;
    }

    /** A partial from Python's {@code encode} tuple. */
    private static Partial partial(Aggregation a, JsonNode encoded) {
        List<String> distinct = new ArrayList<>();
        encoded.get(3).forEach(value -> distinct.add(value.asText()));
        JsonNode latest = encoded.get(4);
        boolean hasLatest = !latest.isNull();
        return Partial.of(
                a,
                encoded.get(0).asLong(),
                new BigDecimal(encoded.get(1).asText()),
                decimalOrNull(encoded.get(2)),
                distinct,
                hasLatest ? latest.get(0).asLong() : 0L,
                hasLatest ? latest.get(1).asText() : "",
                hasLatest ? new BigDecimal(latest.get(2).asText()) : null);
    }

    /** The encode tuple, then result(), the JSON members and whether a binary round trip kept the partial. */
    private static JsonNode describe(Partial p) throws IOException {
        ArrayNode distinct = NODES.arrayNode();
        p.distinct.forEach(distinct::add);
        ArrayNode out = NODES.arrayNode()
                .add(p.count)
                .add(p.total.toString())
                .add(p.extreme == null ? null : p.extreme.toString());
        out.add(distinct);
        out.add(p.latestValue == null
                ? NODES.nullNode()
                : NODES.arrayNode().add(p.latestMs).add(p.latestId).add(p.latestValue.toString()));
        StringBuilder json = new StringBuilder();
        p.appendJson(json);
        ByteArrayOutputStream stored = new ByteArrayOutputStream();
        p.write(new DataOutputStream(stored));
        Partial read = Partial.read(p.aggregation, new DataInputStream(new ByteArrayInputStream(stored.toByteArray())));
        return out.add(p.result().toString()).add(json.toString()).add(read.equals(p));
    }

    private static BigDecimal decimalOrNull(JsonNode node) {
        return node.isNull() ? null : new BigDecimal(node.asText());
    }

    private static byte[] bytes(PeriodLedger ledger) throws IOException {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        ledger.write(new DataOutputStream(out));
        return out.toByteArray();
    }

    private static ArrayNode pair(long[] bounds) {
        return NODES.arrayNode().add(bounds[0]).add(bounds[1]);
    }

    private static JsonNode error(Exception e) {
        return NODES.objectNode().put("error", e.getClass().getSimpleName() + ": " + e.getMessage());
    }
}
