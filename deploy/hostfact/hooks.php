<?php
/**
 * factsync forwarder for HostFact: sends HostFact's invoice hooks, signed, to the factsync listener.
 *
 * INSTALL
 *   1. Copy hooks.php, factsync-forwarder.php, resend.php and factsync-config.example.php into HostFact's
 *      Pro/includes/ directory (HostFact includes Pro/includes/hooks.php on every request, before any hook fires).
 *      Already have a hooks.php of your own? Put the four files in a directory of their own (for example
 *      Pro/includes/factsync/) and add to your hooks.php:   require_once __DIR__ . '/factsync/hooks.php';
 *   2. Copy factsync-config.example.php to factsync-config.php in the same directory and fill in the listener URL
 *      (https://factsync.example.com/hooks/<source>) and the source's secret ("whsec_..."). Or set the constants
 *      below instead; a value in factsync-config.php wins over a constant, an environment variable
 *      (FACTSYNC_URL, FACTSYNC_SECRET, FACTSYNC_SPOOL_DIR, FACTSYNC_CONNECT_TIMEOUT, FACTSYNC_TIMEOUT,
 *      FACTSYNC_TRANSPORT) wins over both.
 *   3. Choose a spool directory outside the web root, writable by the user PHP runs HostFact as.
 *   4. Add a cron job, as that same user, that re-sends what the listener could not take, e.g. every 5 minutes:
 *        0-59/5 * * * *  php /path/to/Pro/includes/resend.php
 *
 * WHAT IT DOES
 *   Each hook becomes one POST of {"action": "<hook>", "data": <$params>} with Standard Webhooks headers
 *   (webhook-id, webhook-timestamp, webhook-signature). It runs inside HostFact's request, so it takes at most
 *   about 2 seconds (connect 1 s, total 2 s), never throws and never prints. When the listener is unreachable,
 *   times out or answers 5xx (or 401/403/404/408/429), the delivery is written to the spool directory and
 *   resend.php sends it later with the same webhook-id, so the listener still recognises a duplicate. Any other
 *   4xx means the listener refused that delivery for good: it is logged to PHP's error log and dropped.
 *
 *   invoice_is_created of a credit invoice (Status 8) gets two keys more, read from HostFact's database because
 *   its API never shows them: CorrespondingInvoice (the invoice it credits) and CorrespondingInvoiceStatus (that
 *   invoice's Status when the credit was made: 9 for a full credit). factsync mirrors a partial credit by them.
 *   This hook leaves at the end of HostFact's request, once HostFact has committed the credit invoice and
 *   updated the original.
 *
 * ADDING A HOOK
 *   HostFact calls a callback with $params only, never with the hook's name, and accepts only the name of a
 *   function (no closures), so every hook needs its own named function. Add one line to the list below:
 *       function factsync_hook_<hook name>($params) { factsync_forward_as(__FUNCTION__, $params); }
 *   The hook name comes from the function's name, and every factsync_hook_* function is registered.
 *   (Chosen over generating the functions with eval() from a list of names: nothing to eval, and malware scanners
 *   on shared hosting flag eval in PHP files.)
 */

// Configuration fallback: used only for the keys that neither the environment nor factsync-config.php sets.
if (!defined('FACTSYNC_URL')) {
    define('FACTSYNC_URL', '');                  // https://factsync.example.com/hooks/<source>
    define('FACTSYNC_SECRET', '');               // whsec_...
    define('FACTSYNC_SPOOL_DIR', '');            // empty: factsync-spool/ next to this file
    define('FACTSYNC_CONNECT_TIMEOUT', 1.0);     // seconds
    define('FACTSYNC_TIMEOUT', 2.0);             // seconds, the whole request
    define('FACTSYNC_TRANSPORT', 'auto');        // auto (curl when loaded), curl or stream
}

require_once __DIR__ . '/factsync-forwarder.php';

// A guard per block rather than an early return: PHP declares the top-level functions of a file when it
// compiles it, so only a conditional block keeps a second include from redeclaring them.
if (!function_exists('factsync_forward_as')) {
    /** The action is the function's name without its prefix (HostFact hook names are lower case). */
    function factsync_forward_as($function, $params)
    {
        factsync_forward(substr(strtolower($function), strlen('factsync_hook_')), $params);
    }

    // The forwarded hooks (shared/seeds/hostfact-webhooks-invoices.txt): one line each.
    function factsync_hook_invoice_is_created($params) { factsync_forward_created($params); }
    function factsync_hook_invoice_is_edited($params) { factsync_forward_as(__FUNCTION__, $params); }
    function factsync_hook_invoice_is_sent($params) { factsync_forward_as(__FUNCTION__, $params); }
    function factsync_hook_invoice_reminder_is_sent($params) { factsync_forward_as(__FUNCTION__, $params); }
    function factsync_hook_invoice_summation_is_sent($params) { factsync_forward_as(__FUNCTION__, $params); }
    function factsync_hook_invoice_is_partly_paid($params) { factsync_forward_as(__FUNCTION__, $params); }
    function factsync_hook_invoice_is_paid($params) { factsync_forward_as(__FUNCTION__, $params); }
    function factsync_hook_invoice_is_unpaid($params) { factsync_forward_as(__FUNCTION__, $params); }
    function factsync_hook_invoice_is_credited($params) { factsync_forward_as(__FUNCTION__, $params); }

    /** The hook names forwarded, from the factsync_hook_* functions defined. */
    function factsync_hooks()
    {
        $hooks = array();
        foreach (get_defined_functions()['user'] as $function) {
            if (strncmp($function, 'factsync_hook_', 14) === 0) {
                $hooks[] = substr($function, 14);
            }
        }
        return $hooks;
    }
}

// Outside HostFact (resend.php, tests) there is no add_action: the functions above are all that is wanted.
// The constant keeps a second include from registering every hook twice.
if (function_exists('add_action') && !defined('FACTSYNC_HOOKS_REGISTERED')) {
    define('FACTSYNC_HOOKS_REGISTERED', true);
    foreach (factsync_hooks() as $factsync_hook) {
        add_action($factsync_hook, 'factsync_hook_' . $factsync_hook);
    }
    unset($factsync_hook);
}
