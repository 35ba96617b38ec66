package dev.metering.rules;

import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.JsonNode;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.ObjectMapper;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.node.ArrayNode;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.node.JsonNodeFactory;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.node.ObjectNode;

import java.io.BufferedReader;
import java.io.BufferedWriter;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.OutputStreamWriter;
import java.nio.charset.StandardCharsets;

/**
 * Runs {@link DedupState} on cases read from stdin, one JSON object per line, each the operations
 * one dedup key sees in order, and writes one JSON answer per line (flushed), so
 * tests/unit/test_amendment_agreement.py can hold it to {@code udfs/amendments.py} with one JVM for
 * the module. Not used by the job. It takes the state from call to call as
 * {@code dev.metering.udfs.FirstSeen} does.
 *
 * <p>A case is {@code {"ops": [...]}}; an op is {@code {"event": {"amendable", "type", "ms", "q",
 * "names", "props", "fingerprint"}}} (names comma-separated, as FirstSeen's {@code property_names};
 * props aligned with them) or {@code {"amendment": {"action", "id", "q", "names"}}}. The answer is
 * {@code {"answers": [...], "text": ...}}: per event {@code ["event", seen, variants]}, per amendment
 * {@code [outcome, [[sign, type, ms, quantity, props], ...]]}, then the key's final stored text
 * (null when cleared). A case that throws answers {@code {"error": ...}}.
 */
public final class DedupCases {
    private static final ObjectMapper JSON = new ObjectMapper();
    private static final JsonNodeFactory NODES = JsonNodeFactory.instance;

    private DedupCases() {}

    public static void main(String[] args) throws IOException {
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        BufferedWriter out = new BufferedWriter(new OutputStreamWriter(System.out, StandardCharsets.UTF_8));
        for (String line = in.readLine(); line != null; line = in.readLine()) {
            JsonNode answer;
            try {
                answer = run(JSON.readTree(line));
            } catch (RuntimeException | IOException e) {
                answer = NODES.objectNode().put("error", e.getClass().getSimpleName() + ": " + e.getMessage());
            }
            out.write(JSON.writeValueAsString(answer));
            out.write('\n');
            out.flush();
        }
    }

    /** One key's operations, with its state carried from one to the next as FirstSeen's {@code Memory}. */
    private static JsonNode run(JsonNode c) {
        long seen = 0L;
        String stored = null;
        ArrayNode answers = NODES.arrayNode();
        for (JsonNode op : c.get("ops")) {
            if (op.has("event")) {
                JsonNode e = op.get("event");
                String[] names = DedupState.names(text(e.get("names")));
                String fingerprint = text(e.get("fingerprint"));
                String known = DedupState.text(stored);
                boolean fresh = DedupState.isNew(known, fingerprint);
                seen += 1;
                String content = DedupState.isFirst(seen) && e.get("amendable").asBoolean()
                        ? DedupState.content(text(e.get("type")), e.get("ms").asLong(), text(e.get("q")), names, strings(e.get("props")))
                        : null;
                stored = DedupState.occurrence(known, fingerprint, fresh, content);
                answers.add(NODES.arrayNode().add("event").add(seen).add(DedupState.variants(stored)));
            } else {
                JsonNode a = op.get("amendment");
                DedupState.Amendment result = DedupState.amend(seen, stored, text(a.get("id")),
                        "amend".equals(text(a.get("action"))), text(a.get("q")), DedupState.names(text(a.get("names"))));
                if (result.text() == null) {
                    seen = 0L; // FirstSeen clears the key's state
                }
                stored = result.text();
                ArrayNode contributions = NODES.arrayNode();
                for (DedupState.Contribution k : new DedupState.Contribution[] {result.retraction(), result.replacement()}) {
                    if (k != null) {
                        ArrayNode props = NODES.arrayNode();
                        for (String p : k.props()) {
                            props.add(p);
                        }
                        contributions.add(NODES.arrayNode()
                                .add(k.sign()).add(k.eventType()).add(k.eventMs()).add(k.quantity()).add(props));
                    }
                }
                answers.add(NODES.arrayNode().add(result.outcome()).add(contributions));
            }
        }
        ObjectNode answer = NODES.objectNode();
        answer.set("answers", answers);
        return answer.put("text", stored);
    }

    private static String text(JsonNode node) {
        return node == null || node.isNull() ? null : node.asText();
    }

    private static String[] strings(JsonNode node) {
        if (node == null || node.isNull()) {
            return null;
        }
        String[] values = new String[node.size()];
        for (int i = 0; i < values.length; i++) {
            values[i] = text(node.get(i));
        }
        return values;
    }
}
