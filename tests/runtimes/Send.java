// Posts two sends to https://api.twilio.com with Apache HttpClient 4 built
// as twilio-java's NetworkHttpClient builds it (useSystemProperties): the
// proxy and the trust store come from system properties only
// (JAVA_TOOL_OPTIONS: -Dhttps.proxyHost, -Dhttps.proxyPort,
// -Djavax.net.ssl.trustStore). The JVM ignores HTTPS_PROXY. Prints, per
// send, its name, the HTTP status and the body in base64.
import java.nio.charset.StandardCharsets;
import java.util.Base64;
import java.util.List;

import org.apache.http.HttpResponse;
import org.apache.http.NameValuePair;
import org.apache.http.client.entity.UrlEncodedFormEntity;
import org.apache.http.client.methods.HttpPost;
import org.apache.http.impl.client.CloseableHttpClient;
import org.apache.http.impl.client.HttpClientBuilder;
import org.apache.http.message.BasicNameValuePair;
import org.apache.http.util.EntityUtils;

public class Send {
    static final String ACCOUNT = "AC0123456789abcdef0123456789abcdef";
    static final String TOKEN = "planted-auth-token-7f3a";

    public static void main(String[] args) throws Exception {
        try (CloseableHttpClient client = HttpClientBuilder.create().useSystemProperties().build()) {
            String[][] sends = {{"allowed", System.getenv("ALLOWED_TO")}, {"blocked", System.getenv("BLOCKED_TO")}};
            for (String[] s : sends) {
                HttpPost post = new HttpPost("https://api.twilio.com/2010-04-01/Accounts/" + ACCOUNT + "/Messages.json");
                String basic = Base64.getEncoder().encodeToString((ACCOUNT + ":" + TOKEN).getBytes(StandardCharsets.UTF_8));
                post.setHeader("Authorization", "Basic " + basic);
                List<NameValuePair> form = List.of(
                        new BasicNameValuePair("To", s[1]),
                        new BasicNameValuePair("From", "+15017122661"),
                        new BasicNameValuePair("Body", "Your code is 123456"));
                post.setEntity(new UrlEncodedFormEntity(form, StandardCharsets.UTF_8));
                HttpResponse resp = client.execute(post);
                byte[] body = EntityUtils.toByteArray(resp.getEntity());
                System.out.println(s[0] + " " + resp.getStatusLine().getStatusCode() + " " + Base64.getEncoder().encodeToString(body));
            }
        }
    }
}
