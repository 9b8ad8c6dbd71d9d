<?php
/**
 * factsync forwarder configuration. Copy to factsync-config.php next to hooks.php and fill in.
 * Readable by the user PHP runs HostFact as and no one else (chmod 600): it holds the secret.
 * An environment variable of the same name in upper case with a FACTSYNC_ prefix (FACTSYNC_URL, ...) wins over
 * a value here; a key left out here falls back to the constant in hooks.php, then to the default shown.
 */
return array(
    // The factsync listener's hook URL for this HostFact administration (the source).
    'url' => 'https://factsync.example.com/hooks/hostfact',

    // The source's hook secret as factsync shows it: "whsec_" followed by base64.
    'secret' => 'whsec_REPLACE_ME',

    // Where deliveries wait when the listener cannot take them, until resend.php sends them. Outside the web
    // root, writable by HostFact's PHP user; created with mode 0700 if missing.
    'spool_dir' => '/var/lib/factsync-spool',

    // Seconds. The hook runs inside HostFact's request, so keep these short.
    'connect_timeout' => 1.0,
    'timeout' => 2.0,

    // auto: curl when the extension is loaded, else PHP's http stream wrapper. Or force 'curl' or 'stream'.
    'transport' => 'auto',
);
