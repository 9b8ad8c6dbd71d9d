<?php
/**
 * factsync forwarder: the code hooks.php and resend.php share (configuration, signing, sending, spooling).
 *
 * Not meant to be edited or included on its own; see hooks.php for installation. Written for PHP 7.4+ with
 * only what a stock PHP ships: curl when present, else the http stream wrapper.
 *
 * Wire format (the factsync listener verifies it with the `standardwebhooks` package):
 *   POST <url>   Content-Type: application/json
 *   body                 {"action": "<hook name>", "data": <the hook's $params, values as PHP has them>}
 *   webhook-id           msg_<32 hex>        one per delivery, kept across re-sends (the listener de-duplicates on it)
 *   webhook-timestamp    unix seconds        of this attempt, so a re-send is never refused as stale
 *   webhook-signature    v1,<base64 HMAC-SHA256(key, "<id>.<timestamp>.<body>")>, key = base64-decoded secret
 *                        without its "whsec_" prefix.
 *
 * Spool file (one per delivery that could not be made, see factsync_spool_write()):
 *   name  <10-digit unix seconds>.<6-digit microseconds>-<webhook-id>.json   (sorting the names = oldest first)
 *   JSON  {"format": 1, "id": "<webhook-id>", "first_attempt": <unix seconds>, "action": "...", "body": "<exact body>"}
 *   The signature is not stored: resend.php signs again with the secret configured then and a fresh timestamp.
 */

// Guarded as a whole: PHP binds the functions of an included file when it compiles it, so an early `return`
// would not stop a second copy of this file (from another path) from redeclaring them and killing the request.
if (!function_exists('factsync_forward')) {

    /** Statuses that do not concern this particular delivery: keep it and send it again later. */
    define('FACTSYNC_RETRY_4XX', array(
        401, // wrong or rotated secret: a configuration error, the delivery itself is fine
        403, // an IP allow list or a proxy in the way
        404, // wrong URL or a source not configured yet
        408, // request timeout
        429, // rate limited
    ));

    /**
     * The configuration, resolved once per process. Per key, the first that is set wins:
     * environment variable (FACTSYNC_URL, ...) > factsync-config.php next to this file > constant of the same
     * name (defined at the top of hooks.php) > built-in default.
     */
    function factsync_config()
    {
        static $config = null;
        if ($config !== null) {
            return $config;
        }
        $file = array();
        $path = __DIR__ . '/factsync-config.php';
        $loaded = is_file($path) ? include $path : array();
        if (is_array($loaded)) {
            $file = $loaded;
        }
        $defaults = array(
            'url' => '',
            'secret' => '',
            'spool_dir' => __DIR__ . '/factsync-spool',
            'connect_timeout' => 1.0,
            'timeout' => 2.0,
            'transport' => 'auto',
        );
        $config = array();
        foreach ($defaults as $key => $default) {
            $name = 'FACTSYNC_' . strtoupper($key);
            $env = getenv($name);
            if ($env !== false && $env !== '') {
                $config[$key] = $env;
            } elseif (isset($file[$key]) && $file[$key] !== '') {
                $config[$key] = $file[$key];
            } elseif (defined($name) && constant($name) !== null && constant($name) !== '') {
                $config[$key] = constant($name);
            } else {
                $config[$key] = $default;
            }
        }
        $config['connect_timeout'] = max(0.1, (float) $config['connect_timeout']);
        $config['timeout'] = max($config['connect_timeout'], (float) $config['timeout']);
        $config['transport'] = strtolower((string) $config['transport']);
        if (!is_array($loaded)) {
            factsync_log('factsync-config.php does not return an array; ignored');
        }
        return $config;
    }

    /** Writes to PHP's error log (stderr under the CLI, unless php.ini names a file). */
    function factsync_log($message)
    {
        error_log('factsync: ' . factsync_redact($message));
    }

    /**
     * The message without the secret or credentials in a URL. Everything factsync logs or prints passes through
     * here.
     */
    function factsync_redact($message)
    {
        $secret = (string) factsync_config()['secret'];
        $bare = preg_replace('/^whsec_/', '', $secret);
        if (strlen($bare) >= 8) {
            $message = str_replace(array($secret, $bare), '[secret]', $message);
        }
        // user:password@ in a URL (the listener could sit behind basic auth)
        return preg_replace('#(\w+://)[^/@\s]+@#', '$1[credentials]@', $message);
    }

    /** A new webhook-id: "msg_" and 32 hex characters. */
    function factsync_new_id()
    {
        try {
            return 'msg_' . bin2hex(random_bytes(16));
        } catch (\Throwable $e) {
            // No system randomness: an id that is unique is still better than losing the delivery.
            return 'msg_' . md5(uniqid('', true) . mt_rand() . getmypid());
        }
    }

    /**
     * The request body, or null when the params cannot be encoded at all.
     * serialize_precision is set to -1 here because an old php.ini may still say 17, which turns -0.35 into
     * -0.34999999999999998 and 0.1 into 0.10000000000000001.
     */
    function factsync_encode($action, $params)
    {
        $flags = JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE | JSON_PRESERVE_ZERO_FRACTION
            | JSON_INVALID_UTF8_SUBSTITUTE;
        $previous = ini_set('serialize_precision', '-1');
        try {
            $envelope = array('action' => (string) $action, 'data' => $params);
            $body = json_encode($envelope, $flags);
            if ($body === false) {
                // NAN/INF or a resource somewhere in $params: send what can be sent (those values become 0 or
                // null) rather than nothing; the listener re-reads the invoice from HostFact anyway.
                factsync_log("$action: params not fully encodable (" . json_last_error_msg() . '); sent in part');
                $body = json_encode($envelope, $flags | JSON_PARTIAL_OUTPUT_ON_ERROR);
            }
        } finally {
            if ($previous !== false) {
                ini_set('serialize_precision', $previous);
            }
        }
        return $body === false ? null : $body;
    }

    /** The webhook-signature header value, or null when the secret is missing or not base64. */
    function factsync_sign($secret, $id, $timestamp, $body)
    {
        $secret = (string) $secret;
        if (strncmp($secret, 'whsec_', 6) === 0) {
            $secret = substr($secret, 6);
        }
        $key = base64_decode($secret);
        if ($key === false || $key === '') {
            return null;
        }
        return 'v1,' . base64_encode(hash_hmac('sha256', $id . '.' . $timestamp . '.' . $body, $key, true));
    }

    /**
     * 'delivered' (2xx), 'rejected' (a 4xx about this delivery: sending it again would not help) or 'retry'
     * (network error, timeout, 5xx, 3xx, and the 4xx in FACTSYNC_RETRY_4XX).
     */
    function factsync_classify($status)
    {
        if ($status >= 200 && $status < 300) {
            return 'delivered';
        }
        if ($status >= 400 && $status < 500 && !in_array($status, FACTSYNC_RETRY_4XX, true)) {
            return 'rejected';
        }
        return 'retry';
    }

    /**
     * Signs and POSTs one delivery, with a timestamp of now.
     * Returns array('result' => 'delivered'|'rejected'|'retry', 'status' => HTTP status or 0, 'detail' => text).
     */
    function factsync_deliver($id, $body)
    {
        $config = factsync_config();
        if ($config['url'] === '') {
            return array('result' => 'retry', 'status' => 0, 'detail' => 'no listener URL configured');
        }
        $timestamp = (string) time();
        $signature = factsync_sign($config['secret'], $id, $timestamp, $body);
        if ($signature === null) {
            return array('result' => 'retry', 'status' => 0, 'detail' => 'no valid secret configured');
        }
        $headers = array(
            'Content-Type: application/json',
            'User-Agent: factsync-hostfact-forwarder/1',
            'webhook-id: ' . $id,
            'webhook-timestamp: ' . $timestamp,
            'webhook-signature: ' . $signature,
        );
        $useCurl = $config['transport'] === 'curl'
            || ($config['transport'] !== 'stream' && function_exists('curl_init'));
        $response = $useCurl
            ? factsync_post_curl($config, $headers, $body)
            : factsync_post_stream($config, $headers, $body);
        $response['result'] = factsync_classify($response['status']);
        return $response;
    }

    function factsync_post_curl($config, $headers, $body)
    {
        $handle = curl_init($config['url']);
        if ($handle === false) {
            return array('status' => 0, 'detail' => 'curl: cannot use this URL');
        }
        $headers[] = 'Expect:'; // curl would otherwise wait for "100 Continue" on bodies over 1 KiB
        curl_setopt_array($handle, array(
            CURLOPT_POST => true,
            CURLOPT_POSTFIELDS => $body,
            CURLOPT_HTTPHEADER => $headers,
            CURLOPT_RETURNTRANSFER => true, // never print into HostFact's page
            CURLOPT_FOLLOWLOCATION => false,
            CURLOPT_PROTOCOLS => CURLPROTO_HTTP | CURLPROTO_HTTPS,
            CURLOPT_CONNECTTIMEOUT_MS => (int) round($config['connect_timeout'] * 1000),
            CURLOPT_TIMEOUT_MS => (int) round($config['timeout'] * 1000),
            CURLOPT_NOSIGNAL => true, // timeouts under a second need it, and signals would hit HostFact's process
        ));
        $answer = curl_exec($handle);
        $status = (int) curl_getinfo($handle, CURLINFO_RESPONSE_CODE);
        $error = curl_error($handle);
        if (PHP_VERSION_ID < 80000) {
            curl_close($handle); // since PHP 8 the handle is an object freed with it, and 8.5 deprecates this
        }
        if ($answer === false) {
            return array('status' => 0, 'detail' => 'curl: ' . $error);
        }
        return array('status' => $status, 'detail' => substr((string) $answer, 0, 300));
    }

    /**
     * The fallback without the curl extension. The stream wrapper's timeout bounds the connect and each read,
     * not the whole exchange; against a listener that answers at all this stays within a few seconds.
     */
    function factsync_post_stream($config, $headers, $body)
    {
        $context = stream_context_create(array(
            'http' => array(
                'method' => 'POST',
                'header' => implode("\r\n", $headers),
                'content' => $body,
                'timeout' => $config['timeout'],
                'ignore_errors' => true, // give us the body and status of a 4xx/5xx instead of false
                'follow_location' => 0,
            ),
        ));
        // A failure comes only as a warning (connection refused, timed out, ...): keep its text for the log.
        $warning = 'no response';
        set_error_handler(function ($severity, $message) use (&$warning) {
            $warning = $message;
            return true;
        });
        try {
            $answer = file_get_contents($config['url'], false, $context);
        } finally {
            restore_error_handler();
        }
        // The wrapper fills $http_response_header in this scope (PHP 8.4 adds a function for it, and later
        // versions deprecate the variable): one line per header of every response received, so the last
        // status line is the one that counts.
        $lines = function_exists('http_get_last_response_headers')
            ? http_get_last_response_headers()
            : (isset($http_response_header) ? $http_response_header : null);
        $status = 0;
        if (is_array($lines)) {
            foreach ($lines as $line) {
                if (preg_match('#^HTTP/\S+\s+(\d{3})#', $line, $m)) {
                    $status = (int) $m[1];
                }
            }
        }
        if ($answer === false || $status === 0) {
            return array('status' => 0, 'detail' => 'stream: ' . $warning);
        }
        return array('status' => $status, 'detail' => substr((string) $answer, 0, 300));
    }

    /** The spool directory, created (0700) when missing; null when it cannot be. */
    function factsync_spool_dir($create)
    {
        $dir = rtrim((string) factsync_config()['spool_dir'], '/');
        if (is_dir($dir)) {
            return $dir;
        }
        if (!$create) {
            return null;
        }
        if (!@mkdir($dir, 0700, true) && !is_dir($dir)) {
            return null;
        }
        @chmod($dir, 0700);
        // In case the directory was left inside the web root despite the advice: Apache will not serve it.
        @file_put_contents($dir . '/.htaccess', "<IfModule mod_authz_core.c>\nRequire all denied\n</IfModule>\n"
            . "<IfModule !mod_authz_core.c>\nDeny from all\n</IfModule>\n");
        return $dir;
    }

    /**
     * Keeps a delivery for resend.php: written to a dot-file first and renamed, so a reader never sees half a
     * file. Returns the path, or null (after logging the whole delivery, its last refuge) when it cannot.
     */
    function factsync_spool_write($id, $action, $body, $firstAttempt)
    {
        $dir = factsync_spool_dir(true);
        if ($dir !== null) {
            $now = microtime(true);
            $seconds = (int) floor($now);
            $name = sprintf('%010d.%06d-%s.json', $seconds, (int) (($now - $seconds) * 1000000), $id);
            $record = json_encode(array(
                'format' => 1,
                'id' => $id,
                'first_attempt' => (int) $firstAttempt,
                'action' => (string) $action,
                'body' => $body,
            ), JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE) . "\n";
            $temporary = $dir . '/.' . $name . '.tmp';
            $handle = @fopen($temporary, 'xb');
            if ($handle !== false) {
                @chmod($temporary, 0600);
                $written = fwrite($handle, $record);
                $closed = fclose($handle);
                if ($written === strlen($record) && $closed && @rename($temporary, $dir . '/' . $name)) {
                    return $dir . '/' . $name;
                }
                @unlink($temporary);
            }
        }
        factsync_log("could not spool $id ($action) in " . factsync_config()['spool_dir'] . "; body: $body");
        return null;
    }

    /**
     * The spooled deliveries, oldest first: file name => path. Dot-files (writes in progress, the lock) and
     * files set aside as unreadable (*.bad) are not part of it.
     */
    function factsync_spool_list()
    {
        $dir = factsync_spool_dir(false);
        if ($dir === null) {
            return array();
        }
        $files = array();
        foreach ((array) @scandir($dir) as $name) {
            if (preg_match('/^\d{10}\.\d{6}-msg_[0-9a-f]{32}\.json$/', (string) $name)) {
                $files[$name] = $dir . '/' . $name;
            }
        }
        ksort($files, SORT_STRING);
        return $files;
    }

    /** Swallows every warning/notice raised while factsync code runs inside HostFact's request. */
    function factsync_ignore_error($severity, $message)
    {
        return true;
    }

    /**
     * What HostFact's API never shows of a credit invoice, read from its database on HostFact's own connection
     * (which sees the credit invoice's still open transaction): array('CorrespondingInvoice' => the credited
     * invoice's id, 'CorrespondingInvoiceStatus' => that invoice's Status now, left out when its row is not
     * found). Null outside HostFact, for any other invoice, and when a read fails.
     */
    function factsync_credit_link($params)
    {
        set_error_handler('factsync_ignore_error');
        try {
            if (!is_array($params) || !isset($params['id']) || !class_exists('Database_Model')) {
                return null;
            }
            $credit = Database_Model::getInstance()
                ->getOne('HostFact_Invoice', array('Status', 'CorrespondingInvoice'))
                ->where('id', $params['id'])->execute();
            // Columns read as properties, not isset(): a row object may hand them out through __get().
            if (!is_object($credit) || (int) $credit->Status !== 8 || (int) $credit->CorrespondingInvoice <= 0) {
                return null;
            }
            $link = array('CorrespondingInvoice' => (int) $credit->CorrespondingInvoice);
            $original = Database_Model::getInstance()->getOne('HostFact_Invoice', array('Status'))
                ->where('id', $link['CorrespondingInvoice'])->execute();
            $status = is_object($original) ? $original->Status : null;
            if (is_numeric($status)) {
                $link['CorrespondingInvoiceStatus'] = (int) $status;
            }
            return $link;
        } catch (\Throwable $e) {
            factsync_log('invoice_is_created: credit link not read, sent without it: '
                . get_class($e) . ': ' . $e->getMessage());
            return null;
        } finally {
            restore_error_handler();
        }
    }

    /**
     * invoice_is_created, with a credit invoice's link added. HostFact commits a credit invoice, and updates a
     * partly credited original, only after this hook returns: a credit invoice's hook leaves when the request
     * ends, so the listener finds both as HostFact leaves them.
     */
    function factsync_forward_created($params)
    {
        $link = factsync_credit_link($params);
        if ($link === null) {
            factsync_forward('invoice_is_created', $params);
            return;
        }
        foreach ($link as $key => $value) {
            $params[$key] = $value;
        }
        try {
            register_shutdown_function('factsync_forward', 'invoice_is_created', $params);
        } catch (\Throwable $e) {
            factsync_forward('invoice_is_created', $params);
        }
    }

    /**
     * What every hook function calls. Never throws and never prints: a PHP Error escaping a hook would break
     * HostFact's own request, and HostFact only catches Exception.
     */
    function factsync_forward($action, $params)
    {
        // Once the listener failed in this process (one request, or one whole HostFact cron batch), later hooks
        // go straight to the spool instead of each waiting for the timeout again.
        static $listenerDown = false;
        set_error_handler('factsync_ignore_error');
        try {
            $body = factsync_encode($action, $params);
            if ($body === null) {
                factsync_log("$action: params could not be encoded (" . json_last_error_msg() . '); not sent');
                return;
            }
            $id = factsync_new_id();
            $firstAttempt = time();
            if ($listenerDown) {
                $outcome = array('result' => 'retry', 'status' => 0, 'detail' => 'listener failed earlier');
            } else {
                $outcome = factsync_deliver($id, $body);
            }
            if ($outcome['result'] === 'retry') {
                $listenerDown = true;
                if (factsync_spool_write($id, $action, $body, $firstAttempt) !== null) {
                    factsync_log("$action $id spooled for resend.php: "
                        . ($outcome['status'] ? 'HTTP ' . $outcome['status'] : $outcome['detail']));
                }
            } elseif ($outcome['result'] === 'rejected') {
                factsync_log("$action $id refused by the listener (HTTP {$outcome['status']}), dropped: "
                    . $outcome['detail']);
            }
        } catch (\Throwable $e) {
            factsync_log("$action: " . get_class($e) . ': ' . $e->getMessage());
        } finally {
            restore_error_handler();
        }
    }
}
