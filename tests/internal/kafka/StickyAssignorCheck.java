// Runs Kafka's own CooperativeStickyAssignor on groups written by
// tests/internal/kafka/stickyAssignor.test.ts, through Kafka's ConsumerProtocol both ways: the
// members' subscriptions arrive as the bytes Partita's generated codec writes, and every round's
// assignments and next subscriptions go back as the bytes Kafka writes. Run as a single-file
// program: java -cp '.cache/kafka/libs/*' StickyAssignorCheck.java IN OUT
//
// IN: int32 groups; per group: int32 topics, per topic (int16-length string name, int32
// partitions); int32 members, per member (string id, int32-length subscription bytes,
// int32-length assignment bytes: Partita's own assignment of that member, to decode and echo).
// OUT: per group: per member (string: the echoed subscription, string: the echoed assignment);
// int32 rounds; per round: per member in IN's order (bytes assignment, bytes next subscription).
// Rounds repeat, each member owning what the last gave it at the next generation, until a round
// changes nothing (at most 6).
import java.io.ByteArrayOutputStream;
import java.io.DataOutputStream;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.stream.Collectors;
import org.apache.kafka.clients.consumer.ConsumerPartitionAssignor.Assignment;
import org.apache.kafka.clients.consumer.ConsumerPartitionAssignor.Subscription;
import org.apache.kafka.clients.consumer.CooperativeStickyAssignor;
import org.apache.kafka.clients.consumer.internals.ConsumerProtocol;
import org.apache.kafka.common.TopicPartition;

public class StickyAssignorCheck {
  static String string(ByteBuffer in) {
    byte[] bytes = new byte[in.getShort()];
    in.get(bytes);
    return new String(bytes, StandardCharsets.UTF_8);
  }

  static ByteBuffer bytes(ByteBuffer in) {
    byte[] bytes = new byte[in.getInt()];
    in.get(bytes);
    return ByteBuffer.wrap(bytes);
  }

  static void writeString(DataOutputStream out, String s) throws Exception {
    byte[] bytes = s.getBytes(StandardCharsets.UTF_8);
    out.writeShort(bytes.length);
    out.write(bytes);
  }

  static void writeBytes(DataOutputStream out, ByteBuffer b) throws Exception {
    byte[] bytes = new byte[b.remaining()];
    b.duplicate().get(bytes);
    out.writeInt(bytes.length);
    out.write(bytes);
  }

  static String partitions(List<TopicPartition> tps) {
    return tps.stream().map(tp -> tp.topic() + ":" + tp.partition()).sorted().collect(Collectors.joining(","));
  }

  public static void main(String[] args) throws Exception {
    ByteBuffer in = ByteBuffer.wrap(Files.readAllBytes(Path.of(args[0])));
    ByteArrayOutputStream buffer = new ByteArrayOutputStream();
    DataOutputStream out = new DataOutputStream(buffer);
    int groups = in.getInt();
    for (int g = 0; g < groups; g++) {
      Map<String, Integer> partitionsPerTopic = new HashMap<>();
      int topics = in.getInt();
      for (int t = 0; t < topics; t++) partitionsPerTopic.put(string(in), in.getInt());
      Map<String, Subscription> subscriptions = new LinkedHashMap<>();
      int members = in.getInt();
      for (int m = 0; m < members; m++) {
        String id = string(in);
        Subscription s = ConsumerProtocol.deserializeSubscription(bytes(in));
        Assignment a = ConsumerProtocol.deserializeAssignment(bytes(in));
        subscriptions.put(id, s);
        writeString(out, String.join(",", s.topics()) + "|" + partitions(s.ownedPartitions()) + "|"
            + s.generationId().orElse(-1) + "|" + s.rackId().orElse(""));
        writeString(out, partitions(a.partitions()));
      }
      // As AbstractPartitionAssignor.assign(Cluster, …) does: only topics someone subscribes to
      // and that exist.
      Map<String, Integer> subscribed = new HashMap<>();
      for (Subscription s : subscriptions.values())
        for (String topic : s.topics()) if (partitionsPerTopic.containsKey(topic)) subscribed.put(topic, partitionsPerTopic.get(topic));
      partitionsPerTopic = subscribed;
      List<ByteBuffer[]> rounds = new ArrayList<>();
      int generation = subscriptions.values().stream().mapToInt(s -> s.generationId().orElse(-1)).max().orElse(-1);
      for (int round = 0; round < 6; round++) {
        Map<String, List<TopicPartition>> assignment = new CooperativeStickyAssignor().assign(partitionsPerTopic, subscriptions);
        generation++;
        boolean changed = false;
        Map<String, Subscription> next = new LinkedHashMap<>();
        ByteBuffer[] encoded = new ByteBuffer[2 * members];
        int m = 0;
        for (Map.Entry<String, Subscription> e : subscriptions.entrySet()) {
          List<TopicPartition> assigned = assignment.getOrDefault(e.getKey(), List.of());
          if (!partitions(assigned).equals(partitions(e.getValue().ownedPartitions()))) changed = true;
          Subscription s = new Subscription(e.getValue().topics(), null, assigned, generation, Optional.empty());
          next.put(e.getKey(), s);
          encoded[2 * m] = ConsumerProtocol.serializeAssignment(new Assignment(assigned));
          encoded[2 * m + 1] = ConsumerProtocol.serializeSubscription(s);
          m++;
        }
        rounds.add(encoded);
        subscriptions = next;
        if (!changed) break;
      }
      out.writeInt(rounds.size());
      for (ByteBuffer[] encoded : rounds) for (ByteBuffer b : encoded) writeBytes(out, b);
    }
    out.flush();
    Files.write(Path.of(args[1]), buffer.toByteArray());
  }
}
