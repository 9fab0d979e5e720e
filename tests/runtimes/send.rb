# Posts two sends to https://api.twilio.com with Ruby's Net::HTTP: the proxy
# comes from the environment only. Net::HTTP looks the proxy up as for an
# http:// URL, so it reads http_proxy even for HTTPS; the roots come from
# SSL_CERT_FILE. Prints, per send, its name, the HTTP status and the body in
# base64.
require "base64"
require "net/http"
require "uri"

ACCOUNT = "AC0123456789abcdef0123456789abcdef"
TOKEN = "planted-auth-token-7f3a"

uri = URI("https://api.twilio.com/2010-04-01/Accounts/#{ACCOUNT}/Messages.json")
Net::HTTP.start(uri.host, uri.port, use_ssl: true) do |http|
  [["allowed", ENV.fetch("ALLOWED_TO")], ["blocked", ENV.fetch("BLOCKED_TO")]].each do |name, to|
    req = Net::HTTP::Post.new(uri)
    req.basic_auth(ACCOUNT, TOKEN)
    req.set_form_data("To" => to, "From" => "+15017122661", "Body" => "Your code is 123456")
    resp = http.request(req)
    puts "#{name} #{resp.code} #{Base64.strict_encode64(resp.body.to_s)}"
  end
end
