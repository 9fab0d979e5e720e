<?php
// Posts two sends to https://api.twilio.com with PHP's curl, as twilio-php's
// CurlClient does: the proxy comes from the environment (HTTPS_PROXY, read
// by libcurl) and the roots from the curl.cainfo ini setting. Prints, per
// send, its name, the HTTP status and the body in base64.
const ACCOUNT = 'AC0123456789abcdef0123456789abcdef';
const TOKEN = 'planted-auth-token-7f3a';

foreach ([['allowed', getenv('ALLOWED_TO')], ['blocked', getenv('BLOCKED_TO')]] as [$name, $to]) {
    $ch = curl_init('https://api.twilio.com/2010-04-01/Accounts/' . ACCOUNT . '/Messages.json');
    curl_setopt_array($ch, [
        CURLOPT_POST => true,
        CURLOPT_POSTFIELDS => http_build_query(['To' => $to, 'From' => '+15017122661', 'Body' => 'Your code is 123456']),
        CURLOPT_USERPWD => ACCOUNT . ':' . TOKEN,
        CURLOPT_RETURNTRANSFER => true,
    ]);
    $body = curl_exec($ch);
    if ($body === false) {
        fwrite(STDERR, curl_error($ch) . "\n");
        exit(1);
    }
    echo $name, ' ', curl_getinfo($ch, CURLINFO_RESPONSE_CODE), ' ', base64_encode($body), "\n";
    curl_close($ch);
}
