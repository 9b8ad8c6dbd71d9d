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

// HostFact's database, only when a test gives it rows: without FACTSYNC_TEST_INVOICES the forwarder runs as it
// does outside HostFact.
if (getenv('FACTSYNC_TEST_INVOICES') !== false) {
    /**
     * The part of HostFact's query builder the forwarder uses:
     *   Database_Model::getInstance()->getOne($table, $fields)->where('id', $id)->execute()
     * returns the row's requested columns as string properties, or false when there is no such row. Rows come
     * from FACTSYNC_TEST_INVOICES, HostFact_Invoice's rows by id: {"2": {"Status": "8", ...}, ...}; a value
     * "throw" makes reading that column throw an Error, as a broken connection would.
     */
    class Database_Model
    {
        private static $instance = null;
        private $table = '';
        private $fields = array();
        private $where = array();

        public static function getInstance()
        {
            if (self::$instance === null) {
                self::$instance = new self();
            }
            return self::$instance;
        }

        public function getOne($table, $fields)
        {
            $this->table = $table;
            $this->fields = (array) $fields;
            $this->where = array();
            return $this;
        }

        public function where($column, $value)
        {
            $this->where[$column] = (string) $value;
            return $this;
        }

        public function execute()
        {
            $rows = json_decode((string) getenv('FACTSYNC_TEST_INVOICES'), true);
            if ($this->table !== 'HostFact_Invoice' || array_keys($this->where) !== array('id')
                || !isset($rows[$this->where['id']])) {
                return false;
            }
            $row = $rows[$this->where['id']];
            $result = new stdClass();
            foreach ($this->fields as $field) {
                if (!array_key_exists($field, $row) || $row[$field] === 'throw') {
                    throw new Error("HostFact_Invoice.$field cannot be read");
                }
                $result->$field = (string) $row[$field];
            }
            return $result;
        }
    }
}
