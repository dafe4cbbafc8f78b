// Reads encodings written by Partita's generated protocol codecs with Kafka's own generated
// message classes (kafka-clients), writes each back and reports any whose bytes differ or that do
// not parse to the last byte. Run by tests/internal/kafka/protocol_java.test.ts as a single-file
// program: java -cp '.cache/kafka/libs/*' ProtocolCheck.java CASES_FILE
// CASES_FILE holds, per case: int16 api key, int16 version, int8 0 (request) or 1 (response),
// int32 length, the body's bytes. Data messages have negative keys: -1 ConsumerProtocolSubscription,
// -2 ConsumerProtocolAssignment (side 0).
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import org.apache.kafka.common.protocol.ApiKeys;
import org.apache.kafka.common.message.ConsumerProtocolAssignment;
import org.apache.kafka.common.message.ConsumerProtocolSubscription;
import org.apache.kafka.common.protocol.ApiMessage;
import org.apache.kafka.common.protocol.Message;
import org.apache.kafka.common.protocol.ByteBufferAccessor;
import org.apache.kafka.common.protocol.ObjectSerializationCache;

public class ProtocolCheck {
  public static void main(String[] args) throws Exception {
    ByteBuffer in = ByteBuffer.wrap(Files.readAllBytes(Path.of(args[0])));
    int cases = 0, bad = 0;
    while (in.hasRemaining()) {
      short key = in.getShort();
      short version = in.getShort();
      byte side = in.get();
      byte[] bytes = new byte[in.getInt()];
      in.get(bytes);
      ApiKeys api = key >= 0 ? ApiKeys.forId(key) : null;
      String what = key == -1 ? "ConsumerProtocolSubscription v" + version
          : key == -2 ? "ConsumerProtocolAssignment v" + version
          : api.name + (side == 0 ? "Request" : "Response") + " v" + version;
      cases++;
      try {
        Message message = key == -1 ? new ConsumerProtocolSubscription()
            : key == -2 ? new ConsumerProtocolAssignment()
            : side == 0 ? api.messageType.newRequest() : api.messageType.newResponse();
        ByteBuffer buffer = ByteBuffer.wrap(bytes);
        message.read(new ByteBufferAccessor(buffer), version);
        if (buffer.hasRemaining()) throw new RuntimeException(buffer.remaining() + " bytes left unread");
        ObjectSerializationCache cache = new ObjectSerializationCache();
        ByteBuffer out = ByteBuffer.allocate(message.size(cache, version));
        message.write(new ByteBufferAccessor(out), cache, version);
        if (!Arrays.equals(out.array(), bytes)) throw new RuntimeException("Kafka writes it back differently");
      } catch (Exception e) {
        bad++;
        if (bad <= 30) System.out.println("MISMATCH " + what + ": " + e);
      }
    }
    System.out.println("checked " + cases + ", " + bad + " differ");
  }
}
