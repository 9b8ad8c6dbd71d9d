<?php
/**
 * The part of HostFact's hook mechanism (Pro/config.php) that hooks.php meets, as the protocol reference §8
 * describes it: add_action() takes a function name and checks it exists, do_action() calls each callback with
 * $params only and swallows an Exception (but not an Error).
 */

$GLOBALS['hostfact_actions'] = array();

function add_action($hook, $callback, $priority = 10)
{
    if (!is_string($callback) || !function_exists($callback)) {
        return false;
    }
    $GLOBALS['hostfact_actions'][$hook][] = $callback;
    return true;
}

function do_action($hook, $params)
{
    $callbacks = isset($GLOBALS['hostfact_actions'][$hook]) ? $GLOBALS['hostfact_actions'][$hook] : array();
    foreach ($callbacks as $callback) {
        try {
            call_user_func($callback, $params);
        } catch (Exception $e) {
            // HostFact skips a callback that throws an Exception.
        }
    }
    return count($callbacks);
}
