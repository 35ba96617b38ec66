package dev.metering.udfs;

import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonFactory;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonParser;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonToken;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.util.JsonRecyclerPools;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.DeserializationFeature;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.ObjectMapper;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.SerializationFeature;

import java.io.IOException;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

/**
 * Reads several paths of a JSON document in one pass of a streaming parser, with exactly the
 * results of Flink's {@code JSON_VALUE} and {@code JSON_QUERY} (Flink 2.2, default strict mode).
 *
 * <p>Flink's JSON functions parse the whole document into maps and lists and then evaluate a
 * JSON path on them, once per call. This reader walks the tokens once and keeps only what the
 * paths ask for; everything else is skipped, though still tokenised, so a document that is not
 * JSON is refused as the full parse refuses it. What it keeps follows the full parse with
 * Flink's mapper settings ({@code SqlJsonUtils}: {@code USE_BIG_DECIMAL_FOR_FLOATS},
 * {@code ORDER_MAP_ENTRIES_BY_KEYS}):
 *
 * <ul>
 *   <li>a scalar's text is what its Java value prints: an integer as {@code Integer}, {@code Long}
 *       or {@code BigInteger} ({@code -0} is {@code 0}), a fraction or exponent as
 *       {@code BigDecimal} ({@code 1e9} is {@code 1E+9}), {@code true}/{@code false}; a JSON
 *       {@code null}, an object or an array is NULL ({@code JSON_VALUE});
 *   <li>a {@code json:} path gives the JSON text of the object or array there, keys sorted, and
 *       NULL for a scalar ({@code JSON_QUERY});
 *   <li>a key that occurs twice keeps its last value (a map's put), what lay under the first
 *       included;
 *   <li>text after the first JSON value is ignored, as the mapper ignores trailing tokens.
 * </ul>
 *
 * <p>A path is {@code $} followed by steps, each {@code .name} ({@code [A-Za-z0-9_-]+}) or
 * {@code ['key']} (any key without a quote or backslash: {@code ['gpu.type']} is the one key
 * {@code gpu.type}, not a nested path). {@code jobs/sql.py} builds no other kind; anything else is
 * refused when the paths are compiled.
 */
final class JsonReader {
    /**
     * Parsers borrow their buffers from a shared pool instead of the default thread-local one:
     * Flink's task threads hold many thread-locals, and the lookup cost 6% of the source task
     * (JFR, docs/benchmarks.md).
     */
    static final JsonFactory FACTORY =
            JsonFactory.builder().recyclerPool(JsonRecyclerPools.sharedConcurrentDequePool()).build();
    static final ObjectMapper MAPPER =
            new ObjectMapper(FACTORY)
                    .configure(SerializationFeature.ORDER_MAP_ENTRIES_BY_KEYS, true)
                    .configure(DeserializationFeature.USE_BIG_DECIMAL_FOR_FLOATS, true);

    /** The prefix of a path whose JSON text is wanted ({@code JSON_QUERY}) rather than its scalar. */
    static final String JSON_PREFIX = "json:";

    /** A step of the compiled paths: the results that end here and the steps below. */
    private static final class Node {
        final Map<String, Node> children = new HashMap<>();
        int[] scalars = new int[0];
        int[] documents = new int[0];
        /** Every result at or below this node (cleared when the key occurs again). */
        int[] all = new int[0];
    }

    /**
     * A set of paths, compiled once. Their values go to the result array in the order the paths
     * were given, from index {@code first} on.
     */
    static final class Paths {
        final String[] source;
        final int first;
        final Node root = new Node();

        Paths(int first, String... paths) {
            this.source = paths.clone();
            this.first = first;
            for (int p = 0; p < paths.length; p++) {
                String path = paths[p];
                int i = first + p;
                boolean document = path.startsWith(JSON_PREFIX);
                String bare = document ? path.substring(JSON_PREFIX.length()) : path;
                Node node = root;
                node.all = append(node.all, i);
                for (String name : steps(bare)) {
                    node = node.children.computeIfAbsent(name, unused -> new Node());
                    node.all = append(node.all, i);
                }
                if (document) {
                    node.documents = append(node.documents, i);
                } else {
                    node.scalars = append(node.scalars, i);
                }
            }
        }

        boolean sameAs(String[] paths) {
            return Arrays.equals(source, paths);
        }

        /** The length of a result array: {@code first} + the number of paths. */
        int width() {
            return first + source.length;
        }

        /** The keys of {@code path}'s steps; throws for anything but {@code $} and .name / ['key'] steps. */
        private static List<String> steps(String path) {
            List<String> keys = new ArrayList<>();
            int i = 1;
            while (path.startsWith("$") && i < path.length()) {
                if (path.charAt(i) == '.') {
                    int end = i + 1;
                    while (end < path.length() && isNameChar(path.charAt(end))) {
                        end++;
                    }
                    if (end == i + 1) {
                        break;
                    }
                    keys.add(path.substring(i + 1, end));
                    i = end;
                } else if (path.startsWith("['", i)) {
                    int end = path.indexOf("']", i + 2);
                    String key = end < 0 ? "" : path.substring(i + 2, end);
                    if (key.isEmpty() || key.indexOf('\'') >= 0 || key.indexOf('\\') >= 0) {
                        break;
                    }
                    keys.add(key);
                    i = end + 2;
                } else {
                    break;
                }
            }
            if (keys.isEmpty() || i != path.length()) {
                throw new IllegalArgumentException(
                        "unsupported JSON path '" + path + "': expected $ and steps .name or ['key'], optionally after '"
                                + JSON_PREFIX + "'");
            }
            return keys;
        }

        /** A character of a {@code .name} step: {@code [A-Za-z0-9_-]}. */
        private static boolean isNameChar(char c) {
            return c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '-';
        }

        private static int[] append(int[] values, int value) {
            int[] result = Arrays.copyOf(values, values.length + 1);
            result[values.length] = value;
            return result;
        }
    }

    private JsonReader() {}

    /**
     * Reads the paths' values of {@code doc} into {@code values} ({@code paths.width()} elements,
     * all overwritten, those before {@code paths.first} with NULL). Returns {@code "object"} when
     * the root is an object, {@code "other"} for any other JSON value, and null when {@code doc} is
     * not JSON.
     */
    static String read(String doc, Paths paths, String[] values) {
        Arrays.fill(values, null);
        try (JsonParser parser = FACTORY.createParser(doc)) {
            JsonToken root = parser.nextToken();
            if (root == null) {
                return null; // no content: the full parse refuses it
            }
            value(parser, root, paths.root, values);
            return root == JsonToken.START_OBJECT ? "object" : "other";
        } catch (IOException | RuntimeException notJson) {
            return null;
        }
    }

    /** Reads the value starting at {@code token} for {@code node}, leaving the parser on its last token. */
    private static void value(JsonParser parser, JsonToken token, Node node, String[] values) throws IOException {
        for (int index : node.all) {
            values[index] = null; // a repeated key: the last value wins, whatever came before
        }
        if (token == JsonToken.START_OBJECT || token == JsonToken.START_ARRAY) {
            if (node.documents.length > 0) {
                // Read this subtree as the mapper does; the paths below it come from the same value.
                Object tree = MAPPER.readValue(parser, Object.class);
                String text = MAPPER.writeValueAsString(tree);
                for (int index : node.documents) {
                    values[index] = text;
                }
                fromTree(tree, node, values);
            } else if (token == JsonToken.START_OBJECT && !node.children.isEmpty()) {
                JsonToken next;
                while ((next = parser.nextToken()) == JsonToken.FIELD_NAME) {
                    Node child = node.children.get(parser.currentName());
                    JsonToken valueToken = parser.nextToken();
                    if (child == null) {
                        parser.skipChildren();
                    } else {
                        value(parser, valueToken, child, values);
                    }
                }
                if (next != JsonToken.END_OBJECT) {
                    throw new IOException("unexpected token " + next);
                }
            } else {
                parser.skipChildren();
            }
            return;
        }
        String text = scalarText(parser, token);
        for (int index : node.scalars) {
            values[index] = text;
        }
    }

    /** The paths below {@code node} read from an already parsed value (maps and lists). */
    private static void fromTree(Object tree, Node node, String[] values) throws IOException {
        if (!(tree instanceof Map)) {
            return;
        }
        Map<?, ?> map = (Map<?, ?>) tree;
        for (Map.Entry<String, Node> entry : node.children.entrySet()) {
            if (!map.containsKey(entry.getKey())) {
                continue;
            }
            Object child = map.get(entry.getKey());
            Node childNode = entry.getValue();
            if (child instanceof Map || child instanceof List) {
                if (childNode.documents.length > 0) {
                    String text = MAPPER.writeValueAsString(child);
                    for (int index : childNode.documents) {
                        values[index] = text;
                    }
                }
                fromTree(child, childNode, values);
            } else if (child != null) {
                String text = String.valueOf(child);
                for (int index : childNode.scalars) {
                    values[index] = text;
                }
            }
        }
    }

    /** The text of the scalar at {@code token}, as its Java value prints, or null for a JSON null. */
    private static String scalarText(JsonParser parser, JsonToken token) throws IOException {
        switch (token) {
            case VALUE_STRING:
                return parser.getText();
            case VALUE_NUMBER_INT:
                return parser.getNumberValue().toString(); // Integer, Long or BigInteger
            case VALUE_NUMBER_FLOAT:
                return parser.getDecimalValue().toString(); // USE_BIG_DECIMAL_FOR_FLOATS
            case VALUE_TRUE:
                return "true";
            case VALUE_FALSE:
                return "false";
            case VALUE_NULL:
                return null;
            default:
                throw new IOException("unexpected token " + token);
        }
    }
}
