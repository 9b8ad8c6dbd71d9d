<?php
/**
 * factsync: sends the deliveries hooks.php spooled while the listener was unreachable, oldest first.
 *
 *   php resend.php            (from cron, as the user HostFact's PHP runs as; see hooks.php for installation)
 *
 * Each delivery keeps its original webhook-id, so the listener drops one it already has, and is signed again
 * with the secret configured now and a fresh timestamp, so a delivery that waited longer than the listener's
 * tolerance (5 minutes) is not refused as stale.
 * A 2xx deletes the file; a refusal for good (a 4xx other than 401/403/404/408/429) deletes it too and is
 * reported on stderr; any other failure stops the run, keeping that file and all later ones in order: the
 * listener is most likely still down, and the next run starts again from the oldest.
 *
 * Prints one line: "factsync resend: sent N, kept M, dropped K".
 * Exit status: 0 = nothing left to send (or another run holds the lock), 1 = stopped at a failure or cannot use
 * the spool directory, 2 = not run from the command line.
 */

if (PHP_SAPI !== 'cli') {
    // The file may sit in a directory the web server can reach; do nothing there.
    http_response_code(403);
    exit(2);
}

require_once __DIR__ . '/hooks.php';

exit(factsync_resend());

function factsync_resend()
{
    $sent = 0;
    $dropped = 0;
    $stopped = false;
    $dir = factsync_spool_dir(false);
    if ($dir !== null && !(is_readable($dir) && is_writable($dir))) {
        factsync_report("cannot read and write $dir: run resend.php as the user HostFact's PHP runs as");
        return 1;
    }
    $files = factsync_spool_list();
    if ($files) {
        // Two runs (a slow one and the next cron tick) must not send the same file twice. The lock only guards
        // senders: hooks.php adds files with an atomic rename and never needs it.
        $lockPath = $dir . '/.lock';
        $lock = @fopen($lockPath, 'c');
        if ($lock === false) {
            factsync_report("cannot open $lockPath: run resend.php as the user HostFact's PHP runs as");
            return 1;
        }
        if (!flock($lock, LOCK_EX | LOCK_NB)) {
            factsync_report('another run holds the lock; nothing done');
            return 0;
        }
        // Listed again under the lock: the run that held it may have sent some of them meanwhile.
        $files = factsync_spool_list();
        foreach ($files as $name => $path) {
            $record = json_decode((string) @file_get_contents($path), true);
            if (!is_array($record) || !isset($record['id'], $record['body']) || !is_string($record['body'])
                || !preg_match('/^msg_[0-9a-f]{32}$/D', (string) $record['id'])) {
                // Unreadable: set it aside for a person to look at rather than block every later delivery.
                @rename($path, $path . '.bad');
                $dropped++;
                factsync_report("$name is not a spooled delivery; renamed to $name.bad");
                continue;
            }
            $action = isset($record['action']) && is_string($record['action']) ? $record['action'] : '?';
            $outcome = factsync_deliver($record['id'], $record['body']);
            if ($outcome['result'] === 'retry') {
                $why = $outcome['status'] ? 'HTTP ' . $outcome['status'] : $outcome['detail'];
                factsync_report("stopped at $name ($action): $why");
                $stopped = true;
                break;
            }
            if ($outcome['result'] === 'delivered') {
                $sent++;
            } else {
                $dropped++;
                factsync_report("$name ($action) refused by the listener (HTTP {$outcome['status']}), dropped: "
                    . $outcome['detail']);
            }
            if (!@unlink($path)) {
                // Sent again next run; the listener recognises the webhook-id.
                factsync_report("could not delete $path after sending it");
            }
        }
        flock($lock, LOCK_UN);
        fclose($lock);
    }
    $kept = count($files) - $sent - $dropped;
    echo "factsync resend: sent $sent, kept $kept, dropped $dropped\n";
    return $stopped ? 1 : 0;
}

/** Reports go to stderr, so cron mails them, whatever php.ini says about the error log. */
function factsync_report($message)
{
    fwrite(STDERR, 'factsync resend: ' . factsync_redact($message) . "\n");
}
