// Reads encodings written by Partita's generated protocol codecs with Kafka's own generated
// message classes (kafka-clients), writes each back and reports any whose bytes differ or that do
// not parse to the last byte. Run by tests/internal/kafka/protocol_java.test.ts as a single-file
// program: java -cp '.cache/kafka/libs/*' ProtocolCheck.java CASES_FILE
// CASES_FILE holds, per case: int16 api key, int16 version, int8 0 (request) or 1 (response),
// int32 length, the body's bytes.
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import org.apache.kafka.common.protocol.ApiKeys;
import org.apache.kafka.common.protocol.ApiMessage;
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
      ApiKeys api = ApiKeys.forId(key);
      String what = api.name + (side == 0 ? "Request" : "Response") + " v" + version;
      cases++;
      try {
        ApiMessage message = side == 0 ? api.messageType.newRequest() : api.messageType.newResponse();
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
