import java.util.*;
public class Alloc {
    public static void main(String[] a) throws Exception {
        List<byte[]> keep = new ArrayList<>();
        for (int i = 0; i < 40000; i++) keep.add(new byte[1000]);
        Map<Integer, String> m = new HashMap<>();
        for (int i = 0; i < 100000; i++) m.put(i, Integer.toString(i) + "xyz");
        System.out.println("ready " + keep.size() + " " + m.size());
        System.in.read();
    }
}
