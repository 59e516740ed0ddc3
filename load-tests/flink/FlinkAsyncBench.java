// The Flink side of sluice's comparison benchmark: the same job as `sluice enrich` —
// JSON record -> lookup in an in-memory table after a fixed delay -> enriched JSON — on
// Flink's own Async I/O operator (orderedWait / unorderedWait), same capacity and
// parallelism. Run by load-tests/flink-bench.sh; not part of the build.
//
// args: INPUT TABLE OUTPUT_DIR PARALLELISM CAPACITY DELAY_MS ordered|unordered [batch|streaming]

import java.nio.file.Files;
import java.nio.file.Paths;
import java.util.Collections;
import java.util.HashMap;
import java.util.Map;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;

import org.apache.flink.api.common.RuntimeExecutionMode;
import org.apache.flink.api.common.eventtime.WatermarkStrategy;
import org.apache.flink.api.common.serialization.SimpleStringEncoder;
import org.apache.flink.connector.file.sink.FileSink;
import org.apache.flink.connector.file.src.FileSource;
import org.apache.flink.connector.file.src.reader.TextLineInputFormat;
import org.apache.flink.core.fs.Path;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.JsonNode;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.ObjectMapper;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.node.ObjectNode;
import org.apache.flink.streaming.api.datastream.AsyncDataStream;
import org.apache.flink.streaming.api.datastream.DataStream;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.flink.streaming.api.functions.async.ResultFuture;
import org.apache.flink.streaming.api.functions.async.RichAsyncFunction;

public class FlinkAsyncBench {
    static final AtomicLong FIRST = new AtomicLong(Long.MAX_VALUE);
    static final AtomicLong LAST = new AtomicLong(0);
    static final AtomicLong COUNT = new AtomicLong(0);

    public static class Enrich extends RichAsyncFunction<String, String> {
        private final String table;
        private final long delayMs;
        private transient Map<String, JsonNode> rows;
        private transient ObjectMapper mapper;
        private transient ScheduledExecutorService timer;

        Enrich(String table, long delayMs) {
            this.table = table;
            this.delayMs = delayMs;
        }

        @Override
        public void open(org.apache.flink.api.common.functions.OpenContext ctx) throws Exception {
            mapper = new ObjectMapper();
            rows = new HashMap<>();
            for (String line : Files.readAllLines(Paths.get(table))) {
                if (line.isBlank()) continue;
                ObjectNode row = (ObjectNode) mapper.readTree(line);
                String key = row.remove("user_id").asText();
                rows.put(key, row);
            }
            timer = Executors.newSingleThreadScheduledExecutor();
        }

        @Override
        public void close() {
            timer.shutdownNow();
        }

        @Override
        public void asyncInvoke(String line, ResultFuture<String> out) throws Exception {
            long now = System.nanoTime();
            FIRST.accumulateAndGet(now, Math::min);
            ObjectNode record = (ObjectNode) mapper.readTree(line);
            JsonNode row = rows.get(record.path("user_id").asText());
            Runnable done = () -> {
                record.set("enrichment", row);
                ObjectNode env = mapper.createObjectNode();
                env.put("id", record.path("id").asText());
                env.put("key", record.path("user_id").asText());
                env.put("outcome", row == null ? "miss" : "ok");
                env.set("record", record);
                String s;
                try {
                    s = mapper.writeValueAsString(env);
                } catch (Exception e) {
                    out.completeExceptionally(e);
                    return;
                }
                LAST.accumulateAndGet(System.nanoTime(), Math::max);
                COUNT.incrementAndGet();
                out.complete(Collections.singleton(s));
            };
            if (delayMs == 0) {
                done.run();
            } else {
                timer.schedule(done, delayMs, TimeUnit.MILLISECONDS);
            }
        }
    }

    public static void main(String[] args) throws Exception {
        String input = args[0], table = args[1], output = args[2];
        int parallelism = Integer.parseInt(args[3]);
        int capacity = Integer.parseInt(args[4]);
        long delay = Long.parseLong(args[5]);
        boolean ordered = args[6].equals("ordered");
        StreamExecutionEnvironment env = StreamExecutionEnvironment.getExecutionEnvironment();
        env.setRuntimeMode(args.length > 7 && args[7].equals("streaming")
                ? RuntimeExecutionMode.STREAMING : RuntimeExecutionMode.BATCH);
        env.setParallelism(parallelism);
        // One input file is one split: rebalance so every async subtask gets records.
        DataStream<String> lines = env.fromSource(
                FileSource.forRecordStreamFormat(new TextLineInputFormat(), new Path(input)).build(),
                WatermarkStrategy.noWatermarks(), "input").rebalance();
        Enrich fn = new Enrich(table, delay);
        DataStream<String> enriched = ordered
                ? AsyncDataStream.orderedWait(lines, fn, 60_000, TimeUnit.MILLISECONDS, capacity)
                : AsyncDataStream.unorderedWait(lines, fn, 60_000, TimeUnit.MILLISECONDS, capacity);
        enriched.sinkTo(FileSink.forRowFormat(new Path(output), new SimpleStringEncoder<String>()).build());
        long t0 = System.nanoTime();
        env.execute("sluice-comparison");
        double wall = (System.nanoTime() - t0) / 1e9;
        double active = (LAST.get() - FIRST.get()) / 1e9;
        long n = COUNT.get();
        System.out.printf("flink %s (%s mode): %d records; %.0f records/s while processing (%.2f s); %.0f records/s including job start (%.2f s)%n",
                ordered ? "orderedWait" : "unorderedWait",
                args.length > 7 && args[7].equals("streaming") ? "streaming" : "batch",
                n, n / active, active, n / wall, wall);
    }
}
