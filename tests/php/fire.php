<?php
/**
 * Fires HostFact hooks through deploy/hostfact/hooks.php the way HostFact does: hooks.php is included with
 * add_action() available, then do_action() runs the registered callbacks.
 *
 *   php tests/php/fire.php ACTION JSON_PARAMS [ACTION JSON_PARAMS ...]
 *   php tests/php/fire.php --list          prints the registered hooks, one a line
 *
 * Configure the forwarder with FACTSYNC_URL, FACTSYNC_SECRET, FACTSYNC_SPOOL_DIR (and FACTSYNC_TRANSPORT,
 * FACTSYNC_TIMEOUT, ...). Several hooks in one call run in one PHP process, as in one HostFact request.
 * FACTSYNC_HOOKS_PHP names another hooks.php to include (tests use a copy in a temporary directory).
 * Exit status 3 when an action has no registered callback; 2 on bad arguments.
 */

require __DIR__ . '/hostfact_stub.php';
$hooksPhp = getenv('FACTSYNC_HOOKS_PHP') ?: __DIR__ . '/../../deploy/hostfact/hooks.php';
require $hooksPhp;

$args = array_slice($argv, 1);
if ($args === array('--list')) {
    foreach ($GLOBALS['hostfact_actions'] as $hook => $callbacks) {
        echo $hook, ' ', implode(',', $callbacks), "\n";
    }
    exit(0);
}
if (!$args || count($args) % 2 !== 0) {
    fwrite(STDERR, "usage: php fire.php ACTION JSON_PARAMS [ACTION JSON_PARAMS ...]\n");
    exit(2);
}
for ($i = 0; $i < count($args); $i += 2) {
    $params = json_decode($args[$i + 1], true);
    if (!is_array($params)) {
        fwrite(STDERR, "fire.php: params for {$args[$i]} are not a JSON object\n");
        exit(2);
    }
    if (do_action($args[$i], $params) === 0) {
        fwrite(STDERR, "fire.php: no callback registered for {$args[$i]}\n");
        exit(3);
    }
}
