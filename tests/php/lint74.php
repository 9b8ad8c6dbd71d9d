<?php
/**
 * A heuristic check that PHP files use no syntax or function newer than PHP 7.4 (the forwarder must run on
 * HostFact installations still on 7.4, and only a newer php-cli is at hand). Catches what a later PHP would
 * otherwise accept silently: match, nullsafe ?->, attributes, enums, readonly, named arguments, union types and
 * trailing commas in signatures, catch without a variable, and the PHP 8 string/array helpers.
 *
 *   php tests/php/lint74.php FILE...     prints one line per finding; exit status 1 when there is any
 */

$newTokens = array('T_MATCH', 'T_NULLSAFE_OBJECT_OPERATOR', 'T_ATTRIBUTE', 'T_ENUM', 'T_READONLY');
$newFunctions = array('str_contains', 'str_starts_with', 'str_ends_with', 'array_is_list', 'get_debug_type',
    'fdiv', 'get_resource_id', 'preg_last_error_msg', 'array_find', 'array_any', 'array_all');

$findings = array();
foreach (array_slice($argv, 1) as $file) {
    // Whitespace and comments carry no syntax: drop them so "the previous token" means something.
    $tokens = array();
    foreach (token_get_all(file_get_contents($file)) as $token) {
        if (is_array($token) && in_array($token[0], array(T_WHITESPACE, T_COMMENT, T_DOC_COMMENT), true)) {
            continue;
        }
        $tokens[] = $token;
    }
    $line = 1;
    $inSignature = false;
    foreach ($tokens as $i => $token) {
        $text = is_array($token) ? $token[1] : $token;
        $line = is_array($token) ? $token[2] : $line;
        $previous = $i > 0 ? $tokens[$i - 1] : null;
        $next = isset($tokens[$i + 1]) ? $tokens[$i + 1] : null;
        $where = "$file:$line";
        if (is_array($token)) {
            $name = token_name($token[0]);
            if (in_array($name, $newTokens, true)) {
                $findings[] = "$where: $name";
            }
            if ($token[0] === T_STRING && in_array(strtolower($text), $newFunctions, true) && $next === '(') {
                $findings[] = "$where: $text() is PHP 8";
            }
            if ($token[0] === T_STRING && $next === ':' && ($previous === '(' || $previous === ',')) {
                $findings[] = "$where: named argument $text:";
            }
            if ($token[0] === T_FUNCTION || (defined('T_FN') && $token[0] === T_FN)) {
                $inSignature = true;
            }
            if ($token[0] === T_CATCH) {
                $j = $i + 2;
                while (isset($tokens[$j]) && $tokens[$j] !== ')' && !(is_array($tokens[$j]) && $tokens[$j][0] === T_VARIABLE)) {
                    $j++;
                }
                if (isset($tokens[$j]) && $tokens[$j] === ')') {
                    $findings[] = "$where: catch without a variable";
                }
            }
        } elseif ($inSignature) {
            if ($text === '{' || $text === ';' || (is_array($next) && $next[0] === T_DOUBLE_ARROW)) {
                $inSignature = false;
            } elseif ($text === '|') {
                $findings[] = "$where: union type";
            } elseif ($text === ',' && $next === ')') {
                $findings[] = "$where: trailing comma in a parameter list";
            }
        }
    }
}
foreach ($findings as $finding) {
    echo $finding, "\n";
}
exit($findings ? 1 : 0);
