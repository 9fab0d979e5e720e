// Posts two sends to https://api.twilio.com with Go's net/http default
// client, as twilio-go does: the proxy and the trusted roots come from the
// environment only (HTTPS_PROXY, SSL_CERT_FILE). Prints, per send, its name,
// the HTTP status and the body in base64.
package main

import (
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
)

const account = "AC0123456789abcdef0123456789abcdef"
const token = "planted-auth-token-7f3a"

func send(name, to string) error {
	form := url.Values{"To": {to}, "From": {"+15017122661"}, "Body": {"Your code is 123456"}}
	req, err := http.NewRequest("POST",
		"https://api.twilio.com/2010-04-01/Accounts/"+account+"/Messages.json",
		strings.NewReader(form.Encode()))
	if err != nil {
		return err
	}
	req.SetBasicAuth(account, token)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	fmt.Printf("%s %d %s\n", name, resp.StatusCode, base64.StdEncoding.EncodeToString(body))
	return nil
}

func main() {
	for _, s := range [][2]string{{"allowed", os.Getenv("ALLOWED_TO")}, {"blocked", os.Getenv("BLOCKED_TO")}} {
		if err := send(s[0], s[1]); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
}
