"""Domain vocabulary for the demo router's generated prompts, broad rather than deep.

A router trained on a few hundred phrases per domain learns those phrases; a user then
asks about `__slots__` or `wget --mirror` and the router has never seen the word. So each
domain lists what it is *about*, as widely as a page of text can: Python's names are mined
from the running interpreter (keywords, builtins, dunder names, the public functions of
common modules, and the first lines of their docstrings as tasks); SQL, shell, math and
general knowledge are hand-written lists of keywords, commands, terms and topics. None of
this is taken from the held-out prompt sets."""

from __future__ import annotations

import builtins
import collections.abc
import importlib
import keyword
import re
import sys
import types

# ---- python (mined) ----------------------------------------------------------------------

# Modules people ask about most; their public callables become concepts ("os.path.join")
# and their docstrings' first lines become tasks ("join two or more pathname components").
COMMON_MODULES = [
    "os", "os.path", "sys", "json", "re", "itertools", "functools", "collections", "datetime", "pathlib",
    "subprocess", "shutil", "math", "random", "statistics", "string", "typing", "dataclasses", "csv",
    "logging", "argparse", "time", "asyncio", "threading", "multiprocessing", "unittest", "configparser",
    "urllib.parse", "urllib.request", "socket", "glob", "tempfile", "pickle", "copy", "heapq", "bisect",
    "operator", "contextlib", "enum", "abc", "textwrap", "pprint", "hashlib", "base64", "uuid", "decimal",
    "fractions", "zipfile", "tarfile", "gzip", "io", "struct", "inspect", "traceback", "warnings", "weakref",
    "queue", "sched", "secrets", "shlex", "difflib", "calendar", "zoneinfo", "html", "http.client",
    "email", "smtplib", "xml.etree.ElementTree", "timeit", "doctest", "platform", "signal", "select",
    "concurrent.futures", "array", "types", "importlib", "codecs", "unicodedata", "locale", "getpass",
]

# Data-model names that objects or classes define rather than inherit from `object`.
EXTRA_DUNDERS = [
    "__slots__", "__init__", "__new__", "__del__", "__call__", "__getattr__", "__getattribute__", "__setattr__",
    "__delattr__", "__get__", "__set__", "__set_name__", "__enter__", "__exit__", "__aenter__", "__aexit__",
    "__post_init__", "__name__", "__main__", "__file__", "__all__", "__dict__", "__doc__", "__module__",
    "__qualname__", "__annotations__", "__wrapped__", "__init_subclass__", "__class_getitem__", "__missing__",
    "__index__", "__bool__", "__hash__", "__eq__", "__lt__", "__repr__", "__str__", "__format__", "__bytes__",
    "__fspath__", "__await__", "__version__", "__builtins__", "__debug__", "__future__", "__pycache__",
    "__init__.py", "__main__.py", "__mro__", "__bases__", "__subclasses__", "__code__", "__defaults__",
    "__closure__", "__globals__", "__kwdefaults__", "__iadd__", "__radd__", "__matmul__", "__round__",
]

_DOC_VERBS = {"return": "get", "returns": "get", "convert": "convert", "create": "create", "test": "test",
              "make": "make", "remove": "remove", "split": "split", "join": "join", "read": "read",
              "write": "write", "open": "open", "copy": "copy", "change": "change", "compute": "compute",
              "calculate": "calculate", "encode": "encode", "decode": "decode", "parse": "parse",
              "format": "format", "wait": "wait for", "run": "run", "execute": "execute", "find": "find",
              "check": "check", "load": "load", "dump": "dump", "serialize": "serialize", "sort": "sort",
              "replace": "replace", "set": "set", "start": "start", "stop": "stop", "send": "send",
              "iterate": "iterate", "search": "search", "match": "match", "scan": "scan", "list": "list"}


def _public_callables(modname: str) -> list[tuple[str, object]]:
    try:
        mod = importlib.import_module(modname)
    except Exception:  # a module missing on this platform (e.g. no _ssl): skip it
        return []
    names = getattr(mod, "__all__", None) or [n for n in dir(mod) if not n.startswith("_")]
    out = []
    for n in sorted(set(names)):
        obj = getattr(mod, n, None)
        if callable(obj) and not isinstance(obj, types.ModuleType):
            out.append((f"{modname}.{n}", obj))
    return out


def _doc_task(obj: object) -> str | None:
    """'Return the absolute version of a path.' -> 'get the absolute version of a path'."""
    doc = getattr(obj, "__doc__", None)
    if not isinstance(doc, str):
        return None
    first = doc.strip().split("\n\n")[0].replace("\n", " ")
    first = re.split(r"(?<=[a-z)])\. ", first)[0].rstrip(".").strip()
    words = first.split()
    if not 4 <= len(words) <= 14 or not words[0].isalpha() or any(ch in first for ch in "<>{}=@"):
        return None
    verb = _DOC_VERBS.get(words[0].lower())
    if verb is None:
        return None
    return " ".join([verb] + words[1:])


def python_names() -> dict[str, list[str]]:
    """Names and tasks mined from this interpreter. Deterministic for a Python version."""
    mods = sorted(m for m in sys.stdlib_module_names if not m.startswith("_"))
    bnames = sorted(n for n in dir(builtins) if not n.startswith("_"))
    excs = [n for n in bnames if isinstance(getattr(builtins, n), type) and issubclass(getattr(builtins, n), BaseException)]
    funcs = [n for n in bnames if callable(getattr(builtins, n)) and n not in excs]
    methods = [f"{t.__name__}.{m}" for t in (str, list, dict, set, bytes, int, float, tuple)
               for m in dir(t) if not m.startswith("_")]
    dunders = set(EXTRA_DUNDERS)
    for t in (object, int, float, list, dict, str, type, types.FunctionType):
        dunders.update(n for n in dir(t) if n.startswith("__") and n.endswith("__"))
    for abc_name in collections.abc.__all__:
        dunders.update(n for n in vars(getattr(collections.abc, abc_name)) if n.startswith("__") and n.endswith("__")
                       and not n.startswith(("__abstract", "__slotnames")))
    dunders -= {"__weakref__", "__subclasshook__", "__abstractmethods__", "__dictoffset__", "__weakrefoffset__",
                "__basicsize__", "__itemsize__", "__flags__", "__text_signature__", "__getstate__"}
    qualified, doc_tasks = [], []
    seen_docs: set[str] = set()
    for m in COMMON_MODULES:
        for name, obj in _public_callables(m):
            qualified.append(name)
            task = _doc_task(obj)
            if task and task.lower() not in seen_docs:
                seen_docs.add(task.lower())
                doc_tasks.append(task)
    return {
        "modules": mods, "builtins": funcs, "exceptions": excs, "methods": methods,
        "keywords": sorted(set(keyword.kwlist) | set(keyword.softkwlist) - {"_"}),
        "dunders": sorted(dunders), "qualified": qualified, "doc_tasks": doc_tasks,
    }


PY_LIBRARIES = [
    "numpy", "pandas", "matplotlib", "requests", "flask", "django", "fastapi", "pytest", "scipy", "seaborn",
    "scikit-learn", "sklearn", "pydantic", "sqlalchemy", "beautifulsoup", "bs4", "selenium", "tkinter", "pygame",
    "pillow", "PIL", "opencv", "cv2", "torch", "tensorflow", "keras", "jupyter", "ipython", "black", "ruff",
    "mypy", "pylint", "flake8", "poetry", "pipenv", "conda", "virtualenv", "venv", "setuptools", "twine", "tox",
    "celery", "aiohttp", "httpx", "uvicorn", "gunicorn", "jinja2", "click", "typer", "rich", "tqdm", "boto3",
    "openpyxl", "xlrd", "pyyaml", "lxml", "scrapy", "numba", "cython", "pyinstaller", "streamlit", "dash",
    "plotly", "sympy", "networkx", "nltk", "spacy", "transformers", "pymysql", "psycopg2", "redis-py", "mock",
]
PY_IDEAS = [
    "list comprehension", "dict comprehension", "set comprehension", "generator expression", "generator function",
    "decorator", "decorator with arguments", "closure", "lambda", "first-class function", "higher-order function",
    "iterator protocol", "iterable", "context manager", "descriptor", "property", "metaclass", "class decorator",
    "abstract base class", "mixin", "multiple inheritance", "method resolution order", "super()", "dunder method",
    "magic method", "operator overloading", "duck typing", "type hint", "type annotation", "generic type",
    "TypeVar", "Protocol class", "Optional type", "Union type", "Literal type", "TypedDict", "dataclass",
    "frozen dataclass", "namedtuple", "enum class", "slots", "instance attribute", "class attribute",
    "bound method", "unbound method", "classmethod", "staticmethod", "self parameter", "cls parameter",
    "positional-only parameter", "keyword-only argument", "default argument", "mutable default argument",
    "variadic arguments", "argument unpacking", "star expression", "walrus operator", "f-string", "format string",
    "raw string", "byte string", "unicode string", "string slicing", "list slicing", "negative index", "shallow copy",
    "deep copy", "mutability", "immutable object", "hashable object", "identity vs equality", "truthiness",
    "short-circuit evaluation", "ternary expression", "conditional expression", "chained comparison",
    "for-else loop", "while loop", "break and continue", "pass statement", "match-case statement",
    "structural pattern matching", "exception chaining", "custom exception class", "try/except/finally",
    "raise from", "assert statement", "traceback", "stack trace", "global interpreter lock", "GIL",
    "thread pool", "process pool", "event loop", "coroutine", "async generator", "awaitable", "async context manager",
    "asyncio.gather", "asyncio.run", "future object", "race condition in threads", "daemon thread",
    "garbage collector", "reference counting", "memory leak in python", "weak reference", "bytecode",
    "CPython interpreter", "PyPy", "REPL", "interactive interpreter", "module search path", "import system",
    "relative import", "absolute import", "circular import", "package __init__.py", "namespace package",
    "entry point script", "console script", "wheel file", "source distribution", "pyproject.toml",
    "setup.py", "requirements.txt", "virtual environment", "site-packages", "pip install -e", "editable install",
    "PYTHONPATH", "sys.path", "sys.argv", "environment variable in os.environ", "docstring", "PEP 8",
    "PEP 484", "linting", "code formatting with black", "unit test", "test fixture", "parametrized test",
    "mock object", "monkeypatch", "code coverage", "doctest", "logging configuration", "log level",
    "pickle serialization", "JSON serialization", "csv reader", "file object", "text mode vs binary mode",
    "file encoding", "newline handling", "path object", "glob pattern in python", "regular expression",
    "regex group", "named group", "lookahead", "greedy vs lazy quantifier", "string method", "list method",
    "dict method", "set operation", "tuple unpacking", "swap two variables", "integer overflow in python",
    "big integers", "float precision", "Decimal type", "Fraction type", "complex number in python",
    "bitwise operator", "floor division", "modulo operator", "exponent operator **", "round() behaviour",
    "sorting stability", "key function", "lambda sort key", "heap queue", "binary search with bisect",
    "deque", "defaultdict", "Counter", "OrderedDict", "ChainMap", "itertools recipe", "functools.reduce",
    "functools.lru_cache", "functools.wraps", "partial function", "recursion limit", "tail recursion",
    "memoization", "web scraping", "REST API client", "HTTP request", "JSON API", "web framework route",
    "template rendering", "ORM model", "database connection from python", "GUI window", "game loop",
    "command line interface", "argument parser", "config file parsing", "environment setup", "jupyter notebook",
    "notebook kernel", "dataframe", "numpy array", "array broadcasting", "vectorized operation", "plotting a chart",
]
PY_PROGRAMS = [
    "a snake game", "a hangman game", "a number guessing game", "rock paper scissors",
    "a calculator", "a to-do list app", "a password generator", "a web scraper", "a chat bot", "a quiz program",
    "a file organizer", "a unit converter", "a countdown timer", "a stopwatch", "a simple text editor",
    "a tiny web server", "a REST API", "a Discord bot", "a Telegram bot", "a CLI tool", "a markdown to html converter",
    "a log file parser", "a CSV report generator", "a bank account class", "an inventory system", "a linked list",
    "a binary search tree", "a stack and a queue", "a priority queue", "a matrix class",
    "a vector class with operator overloading", "a retry decorator", "a timing decorator", "a singleton",
    "a thread-safe counter", "a producer consumer queue", "a rate limiter", "a URL shortener", "a weather app",
    "a blackjack game", "a sudoku solver", "a maze generator", "a prime sieve function", "a fibonacci generator",
    "a caesar cipher", "a palindrome checker", "an anagram finder", "a word counter", "a dice roller",
    "a memory card game", "a pong game", "a budget tracker", "an address book", "a flashcard app",
    "a GUI with buttons", "a plugin system", "a config loader", "a JSON validator", "a backup script",
]
PY_TASK_TEMPLATES = [
    "write {p} in python", "write {p}", "make {p} with classes", "build {p} using only the standard library",
    "code {p}", "implement {p}", "create {p} that runs in the console", "help me write {p}",
]
PY_VERB_TASKS = [
    "read a config file", "read a yaml file", "parse xml", "parse html",
    "validate user input", "handle a keyboard interrupt",
    "retry a failing function", "time how long a function takes", "measure memory use of an object",
    "create a directory if it does not exist", "walk a directory tree",
    "copy a file", "delete a file", "move a file", "read a binary file", "write bytes to a file", "append to a file",
    "open a file with utf-8 encoding", "read a file into a list of lines", "read a large file in chunks",
    "unzip a list of pairs", "sort a dict by key", "group items by a key", "count occurrences in a list", "remove an item from a list",
    "insert into a list at an index", "remove falsy values from a list", "filter a list with a condition",
    "get unique values while keeping order", "chunk a list into pieces", "transpose a list of lists",
    "find the max of a list of dicts", "compare two lists", "check if all items are equal",
    "convert a dict to json", "convert json to a dict", "convert a string to a list", "convert a list to a set",
    "convert a string to a datetime", "format a datetime", "add days to a date", "get the difference between two dates",
    "convert a timestamp to a datetime", "work with timezones", "generate a uuid", "hash a password",
    "encode base64", "read environment variables", "run a shell command from python", "exit a script with an error code",
    "print to stderr", "use print with sep and end", "pad a string with zeros", "check if a string is a number",
    "check if a string contains a substring", "replace text in a string", "split a string into words",
    "find all matches with a regex", "make an object callable", "compare objects by value",
    "make an object hashable", "freeze a dataclass", "add a method to a class", "call the parent constructor",
    "make a private attribute", "write a getter and setter", "use a class as a context manager",
    "write a generator that yields chunks", "use yield from", "gather coroutines", "run tasks concurrently",
    "use a thread pool executor", "share data between processes", "use a queue between threads",
    "schedule a function to run later", "write a decorator that logs calls", "memoize a recursive function",
    "type hint a list of dicts", "type hint a callback", "write a pytest test", "parametrize a test",
    "package a project for pypi", "make a module runnable", "reload a module",
    "list installed packages with pip", "upgrade pip", "freeze requirements", "fix an import error",
    "debug a script with breakpoint()", "profile a script with cProfile", "speed up a slow loop",
    "vectorize a loop with numpy", "filter a dataframe by a column", "group a dataframe and sum",
    "merge two dataframes", "write a dataframe to csv", "draw a bar chart",
    "send an email", "make an http get request", "download a file with requests",
    "serve a folder over http", "open a socket", "write a simple tcp server", "parse a url", "encode url parameters",
    "read a sqlite database from python", "store objects with shelve", "serialize with pickle", "copy an object",
]
PY_ERRORS_EXTRA = [
    "TypeError: 'list' object is not callable", "TypeError: 'str' object does not support item assignment",
    "TypeError: unhashable type: 'list'", "TypeError: 'dict' object is not callable",
    "AttributeError: 'NoneType' object has no attribute 'group'", "ValueError: could not convert string to float",
    "KeyError when reading a dict", "IndentationError: expected an indented block",
    "ZeroDivisionError: division by zero", "FileNotFoundError: [Errno 2] No such file or directory",
    "PermissionError: [Errno 13] Permission denied", "UnicodeDecodeError: 'utf-8' codec can't decode byte",
    "json.decoder.JSONDecodeError: Expecting value", "RuntimeError: dictionary changed size during iteration",
    "OverflowError: math range error", "AssertionError in my test", "NotImplementedError",
    "RuntimeWarning: coroutine was never awaited", "SyntaxError: f-string: expecting '}'",
    "TypeError: __init__() got an unexpected keyword argument", "ImportError: attempted relative import with no known parent package",
    "error: externally-managed-environment when I pip install", "pip: Could not find a version that satisfies the requirement",
]

# ---- sql ---------------------------------------------------------------------------------

SQL_KEYWORDS = [
    "SELECT", "FROM", "WHERE", "GROUP BY", "HAVING", "ORDER BY", "LIMIT", "OFFSET", "FETCH FIRST", "TOP", "DISTINCT",
    "DISTINCT ON", "AS", "JOIN", "INNER JOIN", "LEFT JOIN", "RIGHT JOIN", "FULL OUTER JOIN", "CROSS JOIN",
    "NATURAL JOIN", "LATERAL JOIN", "USING", "ON", "UNION", "UNION ALL", "INTERSECT", "EXCEPT", "MINUS", "IN",
    "NOT IN", "EXISTS", "NOT EXISTS", "ANY", "ALL", "BETWEEN", "LIKE", "ILIKE", "SIMILAR TO", "REGEXP", "IS NULL",
    "IS NOT NULL", "CASE", "CASE WHEN", "WHEN THEN ELSE END", "INSERT INTO", "VALUES", "INSERT ... SELECT",
    "UPDATE", "SET", "DELETE FROM", "TRUNCATE", "MERGE", "UPSERT", "ON CONFLICT DO UPDATE",
    "ON DUPLICATE KEY UPDATE", "REPLACE INTO", "RETURNING", "OUTPUT clause", "CREATE TABLE",
    "CREATE TABLE AS", "SELECT INTO", "ALTER TABLE", "ADD COLUMN", "DROP COLUMN", "RENAME COLUMN",
    "ALTER COLUMN TYPE", "DROP TABLE", "CREATE INDEX", "CREATE UNIQUE INDEX", "DROP INDEX", "CREATE VIEW",
    "CREATE MATERIALIZED VIEW", "REFRESH MATERIALIZED VIEW", "CREATE SCHEMA", "CREATE DATABASE",
    "CREATE SEQUENCE", "CREATE TRIGGER", "CREATE FUNCTION", "CREATE PROCEDURE", "CALL", "EXEC", "DECLARE",
    "BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "SET TRANSACTION", "GRANT", "REVOKE", "CREATE USER",
    "CREATE ROLE", "PRIMARY KEY", "FOREIGN KEY", "REFERENCES", "ON DELETE CASCADE", "UNIQUE", "CHECK constraint",
    "DEFAULT", "NOT NULL", "AUTO_INCREMENT", "SERIAL", "IDENTITY column", "GENERATED ALWAYS AS", "WITH",
    "WITH RECURSIVE", "OVER", "PARTITION BY", "ROWS BETWEEN", "RANGE BETWEEN", "UNBOUNDED PRECEDING",
    "CURRENT ROW", "WINDOW clause", "FILTER clause", "GROUPING SETS", "ROLLUP", "CUBE", "PIVOT", "UNPIVOT",
    "EXPLAIN", "EXPLAIN ANALYZE", "ANALYZE", "VACUUM", "REINDEX", "COLLATE", "NULLS FIRST", "NULLS LAST",
    "ASC", "DESC", "ESCAPE", "CAST", "CONVERT", "::text cast",
]
SQL_FUNCTIONS = [
    "COUNT", "COUNT(DISTINCT)", "SUM", "AVG", "MIN", "MAX", "ROUND", "CEIL", "FLOOR", "ABS", "MOD", "POWER",
    "SQRT", "COALESCE", "NULLIF", "IFNULL", "ISNULL", "NVL", "GREATEST", "LEAST", "CONCAT", "CONCAT_WS", "||",
    "SUBSTRING", "SUBSTR", "LEFT()", "RIGHT()", "LENGTH", "CHAR_LENGTH", "LEN", "UPPER", "LOWER", "INITCAP", "TRIM",
    "LTRIM", "RTRIM", "REPLACE()", "POSITION", "INSTR", "CHARINDEX", "SPLIT_PART", "STRING_AGG", "GROUP_CONCAT",
    "LISTAGG", "ARRAY_AGG", "JSON_AGG", "JSON_EXTRACT", "JSONB_SET", "TO_CHAR", "TO_DATE", "TO_TIMESTAMP",
    "DATE_TRUNC", "DATE_PART", "EXTRACT", "DATEADD", "DATEDIFF", "DATE_ADD", "DATE_SUB", "DATE_FORMAT",
    "STR_TO_DATE", "NOW()", "CURRENT_DATE", "CURRENT_TIMESTAMP", "GETDATE()", "SYSDATE", "INTERVAL", "AGE()",
    "ROW_NUMBER()", "RANK()", "DENSE_RANK()", "NTILE", "LAG", "LEAD", "FIRST_VALUE", "LAST_VALUE", "NTH_VALUE",
    "PERCENT_RANK", "CUME_DIST", "PERCENTILE_CONT", "MEDIAN()", "STDDEV", "VARIANCE", "GENERATE_SERIES",
    "UNNEST", "REGEXP_REPLACE", "REGEXP_MATCHES", "MD5()", "RANDOM()", "RAND()", "NEWID()", "LAST_INSERT_ID",
    "SCOPE_IDENTITY", "currval", "nextval",
]
SQL_TERMS = [
    "PostgreSQL", "postgres", "psql", "pgAdmin", "MySQL", "MariaDB", "SQLite", "sqlite3 shell", "SQL Server",
    "T-SQL", "MSSQL", "SSMS", "Oracle", "PL/SQL", "PL/pgSQL", "Snowflake", "BigQuery", "Redshift", "DuckDB",
    "ClickHouse", "Hive", "Spark SQL", "a relational database", "an RDBMS", "a table", "a row", "a column", "a record",
    "a field", "a tuple in a relation", "a schema", "a database", "a primary key", "a surrogate key", "a natural key",
    "a composite primary key", "a foreign key", "referential integrity", "a constraint", "a unique index",
    "a clustered index", "a non-clustered index", "a covering index", "a B-tree index", "a GIN index",
    "a partial index", "an index scan", "a sequential scan", "a full table scan", "a query plan", "the query planner",
    "cardinality", "selectivity", "table statistics", "a join", "an equi-join", "an anti-join", "a semi-join",
    "a self join", "a many-to-many relationship", "a junction table", "a one-to-many relationship", "a lookup table",
    "a fact table", "a dimension table", "a star schema", "normal forms", "first normal form", "third normal form",
    "denormalization", "a view", "a materialized view", "a temporary table", "a table variable", "a CTE",
    "a recursive query", "a derived table", "a subquery", "a correlated subquery", "a scalar subquery",
    "a window function", "a running total", "a moving average in SQL", "a rank per group", "gaps and islands",
    "an aggregate", "grouping", "a NULL", "three-valued logic", "a transaction", "an isolation level",
    "READ COMMITTED", "SERIALIZABLE", "REPEATABLE READ", "a dirty read", "a phantom read", "row-level locking",
    "a table lock", "a deadlock", "MVCC", "the write-ahead log", "a stored procedure", "a user-defined function",
    "a trigger", "a cursor", "dynamic SQL", "a prepared statement", "parameterized queries", "SQL injection",
    "a connection pool", "a database migration", "a schema migration", "a data dictionary", "information_schema",
    "pg_catalog", "sys.tables", "a sequence", "an auto-increment column", "a UUID primary key", "collation",
    "a character set", "utf8mb4", "a data type", "INT vs BIGINT", "VARCHAR", "CHAR", "TEXT", "NUMERIC", "DECIMAL",
    "FLOAT", "BOOLEAN", "DATE", "TIMESTAMP", "TIMESTAMPTZ", "DATETIME", "JSON column", "JSONB", "an array column",
    "an ENUM column", "a BLOB", "a tablespace", "partitioning a table", "sharding", "replication", "a read replica",
    "a database backup", "pg_dump", "mysqldump", "a restore", "an ERD", "an entity relationship diagram",
    "an ORM", "OLTP vs OLAP", "a data warehouse", "ETL", "ANSI SQL", "query optimization", "a slow query log",
    "result set", "the N+1 query problem", "soft deletes", "an audit table", "a history table",
]
SQL_TABLES_EXTRA = [
    "logs", "sessions", "visits", "clicks", "logins", "subscriptions", "plans", "shipments", "addresses",
    "categories", "tags", "likes", "followers", "messages", "notifications", "patients", "appointments", "doctors",
    "flights", "bookings", "hotels", "rooms", "cars", "rentals", "teams", "players", "matches", "grades", "teachers",
    "classes", "projects", "tasks", "invoices_lines", "order_items", "carts", "coupons", "refunds", "stores",
    "regions", "warehouses", "vendors", "contracts", "leads", "deals", "tickets_history", "audit_log", "songs",
    "playlists", "artists", "albums", "recipes", "ingredients", "members", "loans", "branches", "devices", "readings",
]
SQL_COLUMNS_EXTRA = [
    "first_name", "last_name", "username", "password_hash", "phone", "updated_at", "deleted_at", "last_login",
    "birth_date", "hire_date", "manager_id", "customer_id", "product_id", "unit_price", "discount", "tax",
    "currency", "balance", "revenue", "cost", "stock", "weight", "zip_code", "state", "description", "is_active",
    "type", "level", "duration", "start_date", "end_date", "priority", "views", "votes", "department", "region",
]
SQL_TASKS_EXTRA = [
    "delete rows from {t} where {c} is empty",
    "update {c} in {t} for rows matching a condition", "update {t} using values from {u}",
    "share of each {d} in the total {c} of {t}",
    "latest row per {d} in {t}", "first row per group in {t}",
    "bucket {c} into ranges", "flag rows where {c} is above {n}",
    "get {t} with the same {c}", "find gaps in the {c} sequence of {t}", "find overlapping date ranges in {t}",
    "compare this month's {c} with last month's", "year over year growth of {c}", "monthly totals of {c} in {t}",
    "count {t} per day", "count {t} per week", "count {t} per hour", "count {t} created today",
    "group {t} by year and month", "find the most common {c} in {t}", "find the median {c} in {t}",
    "calculate a 7 day moving average of {c}", "cumulative sum of {c} by date", "rank {d} by total {c}",
    "number rows within each {d}", "merge two tables into one",
    "copy a table's structure without data", "create a table from a query", "rename a column of {t}",
    "set a default value for {c}", "make {c} not null", "add a check constraint on {c}",
    "add an index to speed up a query on {c}", "drop a foreign key", "cascade deletes from {u} to {t}",
    "create a many-to-many table between {t} and {u}", "model a tree of categories",
    "query a hierarchy with a recursive CTE", "list all tables", "describe the {t} table",
    "show the size of each table", "find which query is slow", "kill a long running query", "see active connections",
    "give a user access to one schema", "export query results to csv",
    "import a csv into {t}", "bulk insert many rows into {t}", "insert a row and get its id back",
    "insert or update if the {c} already exists", "lock a row while updating it", "run two updates in one transaction",
    "undo a delete with rollback", "search {t} for a word in {c}", "match {c} with a regular expression", "concatenate {c} and {d} into one column", "extract the year from {c}",
    "convert {c} to a date", "format {c} as a currency string", "round {c} to two decimals", "avoid dividing by zero in a query",
    "turn rows into a comma separated list", "split a comma separated column into rows", "query a json column",
    "join {t} to itself", "select {t} that are not in {u}", "count {u} per {t} including zeros",
    "select random rows from {t}", "select every other row", "write a stored procedure for {t}",
    "write a trigger that updates {c} on change", "write a view over {t} and {u}", "explain why a query uses no index",
]
SQL_ERRORS_EXTRA = [
    "ERROR: duplicate key value violates unique constraint", "ERROR: null value in column violates not-null constraint",
    "ERROR: operator does not exist: integer = text", "ERROR: division by zero in my query",
    "Msg 8120: Column is invalid in the select list because it is not contained in an aggregate function",
    "Error Code: 1054. Unknown column in 'where clause'", "ERROR 1045 (28000): Access denied for user",
    "SQLSTATE[23000]: Integrity constraint violation", "ERROR: relation does not exist",
    "ERROR: current transaction is aborted, commands ignored until end of transaction block",
    "ORA-01722: invalid number", "database is locked (sqlite)", "Lock wait timeout exceeded; try restarting transaction",
    "ERROR: more than one row returned by a subquery used as an expression", "Conversion failed when converting date",
]

# ---- shell -------------------------------------------------------------------------------

# (command, what people use it for): both halves become prompts.
SHELL_TOOLS = [
    ("ls -la", "list all files with details"), ("ls -lh", "list files with human readable sizes"),
    ("ls -lt", "list files newest first"), ("cd -", "go back to the previous directory"), ("cd ~", "go home"),
    ("pwd", "print the working directory"), ("cp -r", "copy a directory recursively"),
    ("cp -p", "copy files keeping permissions and timestamps"), ("mv", "rename or move files"),
    ("rm -rf", "force delete a directory"), ("rm -i", "delete files asking first"), ("mkdir -p", "create parent directories"),
    ("rmdir", "remove an empty directory"), ("touch", "create an empty file or update its timestamp"),
    ("cat", "print a file"), ("tac", "print a file backwards"), ("less", "page through a long file"),
    ("head -n", "show the first lines of a file"), ("tail -f", "follow a log file"), ("tail -n 100", "show the last 100 lines"),
    ("grep -r", "search text in files recursively"), ("grep -i", "search case insensitively"),
    ("grep -v", "show lines that do not match"), ("grep -c", "count matching lines"), ("grep -l", "list files that match"),
    ("grep -E", "search with extended regex"), ("grep -o", "print only the matching part"), ("rg", "search code fast with ripgrep"),
    ("find . -name", "find files by name"), ("find -type d -empty", "find empty directories"),
    ("find -mtime", "find files by modification time"), ("find -size", "find files by size"),
    ("find -exec", "run a command on each found file"), ("find -delete", "delete found files"),
    ("locate", "find a file by name from the index"), ("xargs", "build command lines from input"),
    ("xargs -P", "run commands in parallel"), ("sed -i", "edit a file in place"), ("sed -n", "print selected lines"),
    ("awk '{print $2}'", "print the second column"), ("awk -F,", "split fields on commas"), ("cut -d", "cut fields by a delimiter"),
    ("cut -f", "select tab separated fields"), ("paste", "merge lines of files side by side"), ("column -t", "align output in columns"),
    ("sort -n", "sort numerically"), ("sort -k", "sort by a column"), ("sort -u", "sort and remove duplicates"),
    ("sort -h", "sort human readable sizes"), ("uniq -c", "count repeated lines"), ("wc -l", "count lines"),
    ("wc -w", "count words"), ("tr", "translate or delete characters"), ("tr a-z A-Z", "uppercase text"),
    ("tee", "write output to a file and the screen"), ("diff -u", "compare two files"), ("diff -r", "compare two directories"),
    ("comm", "compare sorted files line by line"), ("cmp", "compare binary files"), ("patch", "apply a diff"),
    ("chmod +x", "make a file executable"), ("chmod -R", "change permissions recursively"), ("chmod 600", "make a file private"),
    ("chown -R", "change the owner of a directory"), ("chgrp", "change a file's group"), ("umask", "set default permissions"),
    ("ln -s", "create a symbolic link"), ("readlink -f", "resolve a symlink"), ("stat", "show file metadata"),
    ("file", "detect a file's type"), ("du -sh", "see the size of a folder"), ("du -h --max-depth=1", "disk usage one level deep"),
    ("ncdu", "browse disk usage"), ("df -h", "check free disk space"), ("free -h", "check memory"),
    ("tar -czvf", "create a gzipped tarball"), ("tar -xzvf", "extract a tar.gz"), ("tar -tf", "list a tarball's contents"),
    ("tar --exclude", "exclude files from an archive"), ("gzip", "compress a file"), ("gunzip", "decompress a .gz file"),
    ("zcat", "read a gzipped file"), ("zgrep", "grep inside compressed logs"), ("zip -r", "zip a folder"),
    ("unzip -l", "list a zip's contents"), ("xz", "compress with xz"), ("7z", "extract a 7z archive"),
    ("ps aux", "list all processes"), ("ps -ef", "show processes with parents"), ("pstree", "show the process tree"),
    ("top", "watch cpu usage"), ("htop", "interactive process viewer"), ("btop", "monitor resources"),
    ("iotop", "top for disk"), ("vmstat", "report virtual memory statistics"), ("iostat", "show disk io statistics"),
    ("kill -9", "force kill a process"), ("kill -HUP", "reload a daemon"), ("killall", "kill processes by name"),
    ("pkill -f", "kill by command line"), ("pgrep", "find a process id by name"), ("nice", "run with lower priority"),
    ("renice", "change a running process's priority"), ("nohup", "keep a command running after logout"),
    ("disown", "detach a job from the shell"), ("jobs", "list background jobs"), ("bg", "resume a job in the background"),
    ("fg", "bring a job to the foreground"), ("ctrl-z", "suspend the running command"), ("screen", "keep a session alive"),
    ("tmux", "split the terminal and detach sessions"), ("watch -n", "rerun a command periodically"),
    ("time", "time a command"), ("timeout", "stop a command after a time limit"), ("sleep", "pause a script"),
    ("crontab -e", "schedule a job"), ("at", "run a command once later"), ("systemctl status", "check a service"),
    ("systemctl enable", "start a service at boot"), ("systemctl restart", "restart a service"),
    ("journalctl -u", "read a service's logs"), ("journalctl -f", "follow the system journal"), ("dmesg", "read kernel messages"),
    ("uname -a", "show the kernel version"), ("lsb_release -a", "show the distribution"), ("hostnamectl", "change the hostname"),
    ("uptime", "see the load average"), ("whoami", "print the current user"), ("id", "show user and group ids"),
    ("sudo", "run as root"), ("sudo -i", "get a root shell"), ("su -", "switch user"), ("visudo", "edit sudoers"),
    ("useradd -m", "add a user with a home directory"), ("usermod -aG", "add a user to a group"),
    ("passwd", "change a password"), ("groups", "list my groups"), ("last", "see recent logins"), ("w", "see who is logged in"),
    ("ssh -i", "ssh with a key file"), ("ssh -p", "ssh on another port"), ("ssh -L", "forward a local port over ssh"),
    ("ssh-keygen", "generate an ssh key"), ("ssh-copy-id", "install my key on a server"), ("ssh-agent", "cache ssh keys"),
    ("~/.ssh/config", "set up ssh host aliases"), ("scp -r", "secure copy"), ("rsync -avz", "sync files to a server"),
    ("rsync --delete", "mirror a directory"), ("sftp", "transfer files interactively"), ("curl -O", "download a file"),
    ("curl -I", "show response headers"), ("curl -X POST -d", "send a post request from the terminal"),
    ("curl -w", "custom curl output format"), ("curl -L", "follow redirects"), ("wget -c", "resume a download"),
    ("wget -r", "download recursively"), ("wget --mirror", "mirror a website"), ("ping -c", "test a host is reachable"),
    ("traceroute", "trace the network route"), ("mtr", "diagnose the network path"), ("dig", "look up dns records"),
    ("nslookup", "query dns"), ("host", "resolve a hostname"), ("/etc/hosts", "map a hostname to an ip"),
    ("/etc/resolv.conf", "set the dns server"), ("ip addr", "show ip addresses"), ("ip route", "show the routing table"),
    ("ifconfig", "show network interfaces"), ("ss -tulpn", "show sockets"), ("netstat -tulpn", "see open ports"),
    ("lsof -i :8080", "find what uses a port"), ("lsof", "list open files"), ("nc -zv", "check if a port is open"),
    ("nmap", "scan ports"), ("tcpdump", "capture packets"), ("iptables", "configure the firewall"), ("ufw allow", "open a firewall port"),
    ("mount", "mount a filesystem"), ("umount", "unmount a drive"), ("/etc/fstab", "configure mounted filesystems"),
    ("lsblk", "list block devices"), ("blkid", "show disk uuids"), ("fdisk -l", "list partitions"), ("mkfs.ext4", "format a partition"),
    ("dd", "write an image to a usb stick"), ("fallocate", "preallocate space for a file"), ("truncate -s 0", "empty a file"),
    ("mkswap", "add swap space"), ("apt install", "install a package on ubuntu"), ("apt update", "refresh package lists"),
    ("apt list --installed", "query apt"), ("dpkg -l", "query the dpkg database"), ("dpkg -S", "find which package owns a file"),
    ("apt-file search", "find which package provides a file"), ("dnf install", "install on fedora"), ("yum", "install on centos"),
    ("rpm -qa", "list rpm packages"), ("pacman -S", "install on arch"), ("brew install", "install on macOS"),
    ("snap install", "install a snap"), ("flatpak", "install a flatpak app"), ("export", "set an environment variable"),
    ("env", "print environment variables"), ("printenv", "show one variable"), ("unset", "remove a variable"),
    ("source ~/.bashrc", "reload the shell config"), ("~/.bashrc", "configure bash"), ("~/.zshrc", "configure zsh"),
    ("~/.profile", "set login variables"), ("alias", "make a shortcut command"), ("type", "see what a command is"),
    ("which", "find where a program lives"), ("whereis", "locate a binary and its man page"), ("man", "read a manual page"),
    ("history", "show command history"), ("ctrl-r", "search command history"), ("!!", "repeat the last command"),
    ("chsh -s", "change the login shell"), ("echo $PATH", "print the path"), ("echo $?", "print the last exit status"),
    ("set -e", "stop a script on errors"), ("set -x", "trace a bash script"), ("set -o pipefail", "fail a pipeline on errors"),
    ("trap", "clean up when a script exits"), ("getopts", "parse script options"), ("read -p", "prompt for input in a script"),
    ("$1 $2", "use script arguments"), ("$@", "pass all arguments along"), ("$(...)", "capture a command's output"),
    ("[[ -f file ]]", "test if a file exists in bash"), ("[ -z \"$var\" ]", "test if a variable is empty"),
    ("for f in *.txt", "loop over files"), ("while read line", "read lines in a loop"), ("case esac", "branch on a value in bash"),
    ("declare -a", "use arrays in bash"), ("${var%.*}", "strip a file extension in bash"), ("${var:-default}", "default a variable"),
    ("2>&1", "merge stderr into stdout"), ("> /dev/null", "silence a command"), (">>", "append output to a file"),
    ("<<EOF", "write a heredoc"), ("| tee -a", "log and show output"), ("&&", "run a command only if the first succeeds"),
    ("||", "run a fallback command"), ("&", "run in the background"), ("basename", "get a file name from a path"),
    ("dirname", "get the directory of a path"), ("realpath", "get an absolute path"), ("date +%F", "print today's date"),
    ("cal", "show a calendar"), ("bc", "calculate in the terminal"), ("seq", "print a sequence of numbers"),
    ("shuf", "shuffle lines"), ("split -b", "split a file into parts"), ("md5sum", "checksum a file"),
    ("sha256sum -c", "verify a download"), ("base64 -d", "decode base64 in the terminal"), ("openssl", "make a self-signed certificate"),
    ("gpg", "encrypt a file"), ("jq", "pretty print json in the terminal"), ("yq", "edit yaml from the shell"),
    ("xxd", "hex dump a file"), ("strings", "show text in a binary"), ("iconv", "convert file encoding"),
    ("dos2unix", "fix windows line endings"), ("rename", "rename files with a pattern"), ("tree", "show a directory tree"),
    ("git status", "see changed files"), ("git add -p", "stage parts of a file"), ("git commit --amend", "fix the last commit"),
    ("git reset --soft HEAD~1", "move HEAD back one commit"), ("git reset --hard", "throw away local changes"),
    ("git revert", "revert a pushed commit"), ("git checkout -b", "create a branch"), ("git switch", "change branches"),
    ("git stash", "shelve uncommitted changes"), ("git stash pop", "restore stashed changes"), ("git merge", "merge a branch"),
    ("git rebase -i", "squash commits"), ("git cherry-pick", "copy a commit to another branch"), ("git log --oneline", "see history"),
    ("git diff --staged", "see staged changes"), ("git blame", "see who changed a line"), ("git bisect", "find the commit that broke it"),
    ("git clone", "clone a repository"), ("git pull --rebase", "update a branch"), ("git push -u origin", "push a new branch"),
    ("git push --force-with-lease", "force push safely"), ("git fetch --prune", "drop deleted remote branches"),
    ("git remote -v", "list remotes"), ("git tag", "tag a release"), ("git clean -fd", "remove untracked files"),
    ("git reflog", "recover a lost commit"), ("git submodule update --init", "fetch submodules"), (".gitignore", "ignore files in git"),
    ("git config --global", "set my git name and email"), ("git lfs", "store big files in git"),
    ("docker run -it", "run a container interactively"), ("docker run -d -p", "run a container in the background with a port"),
    ("docker ps -a", "list containers"), ("docker logs -f", "see a container's logs"), ("docker exec -it", "open a shell in a container"),
    ("docker build -t", "build an image"), ("docker images", "list images"), ("docker rmi", "delete an image"),
    ("docker system prune", "clean up docker"), ("docker volume", "persist container data"), ("docker compose up", "start services"),
    ("docker compose down", "stop services"), ("Dockerfile", "write a dockerfile"), ("docker cp", "copy a file out of a container"),
    ("kubectl get pods", "list pods"), ("kubectl logs", "read pod logs"), ("kubectl apply -f", "deploy a manifest"),
    ("kubectl describe", "debug a pod"), ("kubectl port-forward", "reach a pod locally"), ("helm install", "install a chart"),
    ("make", "run a makefile target"), ("gcc -o", "compile a C file from the terminal"), ("./configure && make install", "build from source"),
    ("vim", "edit a file in the terminal"), ("nano", "edit a file simply"), ("clear", "clear the terminal"), ("exit", "close the shell"),
    ("reboot", "restart the machine"), ("shutdown -h now", "power off"), ("lscpu", "show cpu details"), ("nproc", "count cpu cores"),
    ("lspci", "list pci devices"), ("lsusb", "list usb devices"), ("sensors", "read cpu temperature"), ("nvidia-smi", "check the gpu"),
]
SHELL_IDEAS = [
    "a shell script", "a bash script", "a shebang line", "the PATH variable", "an environment variable",
    "a dotfile", "a symlink", "a hard link", "an inode", "file permissions", "rwx bits", "the sticky bit", "setuid",
    "the root user", "sudo privileges", "a process", "a PID", "a zombie process", "an orphan process", "a signal",
    "SIGTERM vs SIGKILL", "SIGINT", "a daemon", "a systemd service", "a unit file", "a cron expression", "a crontab",
    "stdin", "stdout", "stderr", "a pipe", "a named pipe", "redirection", "a file descriptor", "a here string",
    "a subshell", "command substitution", "process substitution", "parameter expansion", "brace expansion",
    "glob patterns", "wildcards", "quoting in bash", "single vs double quotes", "word splitting", "exit status",
    "a login shell vs interactive shell", "the terminal vs the shell", "a tty", "a job", "job control", "a pipeline",
    "a regular expression in grep", "the filesystem hierarchy", "/etc", "/var/log", "/tmp", "/usr/local/bin", "/proc",
    "/dev/null", "a mount point", "a partition", "a swap partition", "a filesystem", "ext4", "a disk quota",
    "a package manager", "a repository of packages", "a PPA", "an ssh tunnel", "an ssh key pair", "known_hosts",
    "authorized_keys", "a firewall rule", "a port", "a socket", "localhost", "a DNS lookup", "an IP address",
    "a network interface", "a container", "a docker image", "a docker volume", "a git branch", "a git commit",
    "a merge conflict", "a detached HEAD", "a git remote", "the staging area", "a terminal emulator", "zsh",
    "fish shell", "oh-my-zsh", "a prompt string", "tab completion", "the load average", "uptime", "a core dump",
    "ulimit", "open file limits", "a log rotation", "logrotate", "the syslog", "the journal", "WSL", "the macOS terminal",
    "the linux command line", "a headless server", "a VPS", "a raspberry pi terminal",
]
SHELL_TASKS_EXTRA = [
    "mirror a site for offline reading", "resume a broken download", "upload a file with curl",
    "find what is using all the memory", "see which program uses the network",
    "compare two directories recursively", "search inside gzipped logs", "make a backup of config files", "back up my home directory to a usb drive",
    "add a prefix to every file name", "replace spaces in file names", "batch convert images",
    "count files by extension", "find duplicate files", "find broken symlinks",
    "list the ten largest files", "clean up old log files", "delete files except the newest five",
    "copy only new files", "watch a directory for changes", "run a script when a file changes", "run a command on startup",
    "run a long job in tmux", "schedule a backup every night",
    "run something every five minutes", "send a script's output to a log with timestamps", "log stdout and stderr separately",
    "check if a program is installed", "find which package a command comes from", "see why a service failed",
    "restart nginx", "reload a config without downtime", "check what is listening on a port", "free up disk space",
    "find out which folder fills the disk", "check the linux version", "see how many cpu cores I have", "check the battery from the terminal", "change the timezone", "set the date and time",
    "change my shell to zsh", "customise my bash prompt", "make a command available everywhere", "install software from a tarball",
    "create a user and give it sudo", "lock a user account", "change file ownership to www-data",
    "give a group write access to a folder", "make a script run as root", "open a port in the firewall",
    "forward a port over ssh", "copy my ssh key to a server", "fix ssh permission denied publickey",
    "mount a windows share", "format a usb stick", "check a disk for errors", "make a bootable usb",
    "extract a tar.bz2", "create an encrypted zip", "split a large archive", "join split files back together",
    "print a file with line numbers", "show lines between two patterns", "delete blank lines from a file",
    "remove duplicate lines without sorting", "top 10 most frequent words in a file",
    "sum a column of numbers in the terminal", "insert a line at the top of a file",
    "convert a file from dos to unix line endings", "loop over lines of a file in bash", "loop over numbers in bash",
    "check if a directory exists in bash", "compare numbers in a bash if", "compare strings in bash", "use an array in bash",
    "read user input in a bash script", "parse flags in a shell script", "exit a script if a command fails",
    "get the directory of the running script", "get the exit code of a pipeline", "run commands in parallel in bash",
    "discard local changes in git", "rename a git branch", "delete a remote branch",
    "resolve a merge conflict", "see what changed in the last commit", "squash my last three commits",
    "clone only the latest commit", "list docker containers",
    "stop all docker containers", "get a shell inside a container",
    "copy files into a docker container", "see disk usage of docker", "restart a pod in kubernetes",
]
SHELL_ERRORS_EXTRA = [
    "-bash: /usr/bin/python: No such file or directory", "zsh: command not found: brew", "E: Unable to locate package",
    "E: Could not get lock /var/lib/dpkg/lock-frontend", "fatal: not a git repository", "fatal: refusing to merge unrelated histories",
    "error: failed to push some refs", "Got permission denied while trying to connect to the Docker daemon socket",
    "curl: (6) Could not resolve host", "curl: (60) SSL certificate problem", "wget: unable to resolve host address",
    "mount: wrong fs type, bad option, bad superblock", "Read-only file system", "Too many open files",
    "Killed (out of memory)", "Segmentation fault (core dumped)", "bad interpreter: /bin/bash^M: no such file or directory",
    "unary operator expected", "ambiguous redirect", "WARNING: UNPROTECTED PRIVATE KEY FILE!", "Host key verification failed",
    "Job for nginx.service failed because the control process exited with error code", "crontab: no crontab for user",
]

# ---- math --------------------------------------------------------------------------------

MATH_TERMS = [
    # arithmetic and numbers
    "addition", "subtraction", "multiplication", "division", "long multiplication", "the times table", "remainders",
    "place value", "rounding", "estimation", "decimals", "fractions", "mixed numbers", "improper fractions",
    "equivalent fractions", "reciprocals", "percentages", "percentage change", "ratios", "rates", "unit rates",
    "proportions", "direct proportion", "inverse proportion", "integers", "negative numbers", "absolute value",
    "even and odd numbers", "prime numbers", "composite numbers", "prime factorization", "divisibility rules",
    "factors and multiples", "GCD", "LCM", "powers", "exponents", "negative exponents", "square numbers",
    "cube roots", "square roots", "surds", "rational numbers", "irrational numbers", "real numbers",
    "complex numbers", "imaginary numbers", "scientific notation", "significant figures", "the number line",
    "order of operations", "PEMDAS", "BODMAS", "mental arithmetic",
    # algebra
    "variables", "algebraic expressions", "like terms", "expanding brackets", "factorising", "linear equations",
    "simultaneous equations", "inequalities", "quadratic equations", "the discriminant", "completing the square",
    "the quadratic formula", "polynomials", "polynomial long division", "the remainder theorem", "functions",
    "domain and range", "inverse functions", "composite functions", "graphs of functions", "the slope-intercept form",
    "gradient", "y-intercept", "exponential growth", "exponential decay", "logarithms", "natural log", "e",
    "arithmetic sequences", "geometric sequences", "series", "sigma notation", "binomial expansion",
    "Pascal's triangle", "absolute value equations", "matrices", "matrix multiplication", "determinants",
    "inverse matrices", "eigenvalues", "eigenvectors", "vectors", "the cross product", "linear algebra",
    "modular arithmetic", "proof by induction", "set theory", "Venn diagrams", "logic and truth tables",
    # geometry and trigonometry
    "angles", "acute and obtuse angles", "parallel lines", "triangles", "isosceles triangles", "similar triangles",
    "congruent triangles", "the Pythagorean theorem", "right triangles", "trigonometry", "SOH CAH TOA", "sine",
    "cosine", "tangent", "the unit circle", "radians", "the sine rule", "the cosine rule", "circles", "radius",
    "diameter", "circumference", "arc length", "sector area", "chords", "polygons", "interior angles",
    "regular polygons", "quadrilaterals", "parallelograms", "trapezoids", "rhombus", "area", "perimeter",
    "surface area", "volume", "cubes", "cuboids", "cylinders", "cones", "spheres", "pyramids", "prisms",
    "coordinate geometry", "the distance formula", "the midpoint formula", "transformations", "reflections",
    "rotations", "symmetry", "bearings", "scale drawings",
    # calculus
    "limits", "continuity", "derivatives", "differentiation", "the product rule", "the quotient rule",
    "the chain rule", "implicit differentiation", "stationary points", "maxima and minima", "optimisation problems",
    "related rates", "integrals", "integration", "definite integrals", "the fundamental theorem of calculus",
    "integration by substitution", "integration by parts", "partial fractions", "area under a curve",
    "differential equations", "Taylor series", "Maclaurin series", "partial derivatives", "gradient descent math",
    # statistics and probability
    "probability", "independent events", "mutually exclusive events", "conditional probability", "Bayes' theorem",
    "expected value", "random variables", "the binomial distribution", "the normal distribution", "z-scores",
    "the mean", "the median", "the mode", "the range", "quartiles", "interquartile range", "box plots", "histograms",
    "standard deviation", "variance", "correlation", "regression lines", "sampling", "confidence intervals",
    "hypothesis testing", "p-values", "permutations", "combinations", "factorials", "the birthday problem",
    "odds", "tree diagrams", "weighted averages", "percentiles",
    # money and units
    "simple interest", "compound interest", "APR", "loan repayments", "depreciation", "profit and loss",
    "discounts", "sales tax", "VAT", "exchange rates", "unit conversion", "metric units", "imperial units",
    "speed distance time", "density", "time zones arithmetic", "temperature conversion",
]
MATH_UNITS = [
    ("km", "miles"), ("miles", "km"), ("kg", "pounds"), ("pounds", "kg"), ("litres", "gallons"), ("gallons", "litres"),
    ("cm", "inches"), ("inches", "cm"), ("feet", "metres"), ("metres", "feet"), ("grams", "ounces"), ("ounces", "grams"),
    ("celsius", "fahrenheit"), ("fahrenheit", "celsius"), ("hours", "minutes"), ("days", "hours"), ("weeks", "days"),
    ("km/h", "m/s"), ("mph", "km/h"), ("square metres", "square feet"), ("acres", "hectares"), ("ml", "cups"),
    ("cups", "ml"), ("tablespoons", "teaspoons"), ("bytes", "kilobytes"), ("seconds", "minutes"), ("degrees", "radians"),
]
SHAPES = ["square", "rectangle", "triangle", "circle", "trapezoid", "parallelogram", "rhombus", "hexagon",
          "pentagon", "octagon", "semicircle", "cube", "cuboid", "cylinder", "cone", "sphere", "pyramid", "prism",
          "kite", "ellipse"]
MATH_FUNCS = ["x^2", "x^3", "3x^2 + 2x", "sin x", "cos x", "tan x", "e^x", "ln x", "sqrt(x)", "1/x", "x e^x",
              "x^2 sin x", "e^(3x)", "ln(x^2 + 1)", "(x + 1)^5", "sin(2x)", "x / (x + 1)", "2^x", "cos^2 x", "x ln x"]

# ---- general -----------------------------------------------------------------------------

GENERAL_TOPICS = [
    # history
    "ancient Rome", "ancient Greece", "the Persian Empire", "the Ottoman Empire", "the Mongol Empire",
    "the British Empire", "the Middle Ages", "feudalism", "the Crusades", "the Magna Carta",
    "the Age of Exploration", "Christopher Columbus", "the Spanish conquest of the Inca", "the American Revolution",
    "the French Revolution", "Napoleon", "slavery and abolition", "the suffragettes",
    "World War I", "World War II", "the Holocaust", "D-Day", "the atomic bomb", "the Cold War", "the Cuban missile crisis",
    "the space race", "the fall of the Berlin Wall", "the civil rights movement", "Martin Luther King",
    "Nelson Mandela", "Gandhi", "Winston Churchill", "Abraham Lincoln", "Queen Victoria", "Genghis Khan",
    "Julius Caesar", "Alexander the Great", "Cleopatra", "the pharaohs", "the pyramids of Giza", "Stonehenge",
    "the Maya", "the Incas", "the samurai", "the Qin dynasty", "the Tang dynasty", "colonialism", "the partition of India",
    # science and nature
    "photosynthesis", "the water cycle", "plate tectonics", "the rock cycle", "erosion", "weather fronts", "climate change",
    "the greenhouse effect", "ocean currents", "the carbon cycle", "ecosystems", "food chains", "biodiversity",
    "extinction", "natural selection", "genetics", "viruses", "bacteria", "the heart", "the lungs",
    "digestion", "the nervous system", "hormones", "sleep cycles", "memory", "emotions", "the five senses",
    "colour vision", "sound waves", "the speed of sound", "gravity", "relativity", "quantum physics", "atoms",
    "the periodic table", "chemical reactions", "acids and bases", "nuclear energy", "solar power", "wind turbines",
    "electric current", "magnets", "rainbows", "lightning", "the seasons", "eclipses", "the phases of the moon",
    "black holes", "galaxies", "the Milky Way", "exoplanets", "the International Space Station", "astronauts",
    "volcanoes", "tsunamis", "tornadoes", "coral bleaching", "migration of birds", "hibernation", "octopuses",
    "cats", "dogs", "bees", "crows", "elephants' memory", "sloths", "pandas", "polar bears", "jellyfish",
    # geography and culture
    "Japan", "Brazil", "Canada", "Iceland", "Kenya", "Peru", "Norway", "Mexico", "India", "Egypt", "Australia",
    "New Zealand", "Scotland", "Ireland", "Morocco", "Vietnam", "Thailand", "Greece", "Portugal", "Argentina",
    "the Sahara", "the Himalayas", "the Alps", "the Amazon rainforest", "the Great Barrier Reef", "the Dead Sea",
    "Antarctica", "the Arctic", "Paris", "Rome", "Kyoto", "New York", "Istanbul", "Barcelona", "Prague", "Cairo",
    "Chinese New Year", "Diwali", "Ramadan", "Christmas traditions", "Thanksgiving", "Day of the Dead", "Hanukkah",
    "Buddhism", "Hinduism", "Islam", "Christianity", "Judaism", "mythology", "folk tales", "fairy tales",
    # arts and literature
    "Shakespeare's plays", "Jane Austen", "Charles Dickens", "Tolstoy", "Homer's Odyssey", "Greek tragedy", "Don Quixote",
    "poetry forms", "sonnets", "haiku", "the hero's journey", "science fiction", "fantasy novels", "mystery novels",
    "classical music", "jazz history", "rock and roll", "hip hop", "the Beatles", "opera", "ballet", "musicals",
    "impressionist painting", "the Mona Lisa", "Picasso", "Rembrandt", "Michelangelo", "modern art", "photography",
    "film history", "Hitchcock", "animation", "architecture", "Gothic cathedrals",
    # everyday life
    "cooking pasta", "baking bread", "making coffee", "tea", "wine", "cheese", "chocolate", "spices", "vegetarian meals",
    "meal prep", "healthy snacks", "food allergies", "hydration", "exercise", "running", "cycling", "hiking",
    "swimming lessons", "yoga", "stretching", "posture", "sleep", "insomnia", "stress", "anxiety",
    "mindfulness", "habits", "productivity", "time management", "motivation", "confidence", "loneliness",
    "friendship", "dating", "marriage", "divorce", "parenting", "toddlers", "teenagers", "grandparents", "pets",
    "adopting a dog", "house training a puppy", "moving house", "renting an apartment", "buying a car", "saving money",
    "budgeting", "investing", "index funds", "inflation", "recessions", "the stock market", "cryptocurrency",
    "insurance", "taxes", "student loans", "job interviews", "cover letters", "resumes", "careers",
    "changing careers", "working from home", "burnout", "negotiation", "leadership", "teamwork", "public speaking",
    "learning a language", "studying for exams", "note taking", "reading more books", "gardening", "houseplants",
    "composting", "cleaning tips", "laundry stains", "home repairs", "decorating", "minimalism", "travel on a budget",
    "packing light", "jet lag", "camping", "road trips", "weddings", "birthday parties", "gifts", "etiquette",
    "manners", "small talk", "apologies", "thank-you notes", "condolences", "retirement", "volunteering",
    "elections", "democracy", "human rights", "philosophy of mind", "ethics", "stoicism", "existentialism",
    "the meaning of words", "idioms", "grammar", "punctuation", "spelling", "etymology", "sign language",
]
GENERAL_PEOPLE = [
    "Marie Curie", "Albert Einstein", "Isaac Newton", "Charles Darwin", "Galileo", "Ada Lovelace", "Nikola Tesla",
    "Leonardo da Vinci", "William Shakespeare", "Jane Austen", "Frida Kahlo", "Vincent van Gogh", "Claude Monet",
    "Johann Sebastian Bach", "Ludwig van Beethoven", "Wolfgang Amadeus Mozart", "Queen Elizabeth I", "Joan of Arc",
    "Confucius", "Socrates", "Plato", "Aristotle", "Buddha", "Cleopatra", "Napoleon Bonaparte", "George Washington",
    "Abraham Lincoln", "Harriet Tubman", "Rosa Parks", "Mahatma Gandhi", "Nelson Mandela", "Florence Nightingale",
    "Amelia Earhart", "Neil Armstrong", "Yuri Gagarin", "Frederick Douglass", "Simon Bolivar", "Catherine the Great",
    "Charlemagne", "Hannibal", "Marco Polo", "Ibn Battuta", "Rumi", "Homer", "Dante", "Tolkien", "Agatha Christie",
    "Mark Twain", "Virginia Woolf", "Emily Dickinson", "Pablo Picasso", "Michelangelo", "Coco Chanel", "Walt Disney",
]
GENERAL_WRITING = [
    "a thank-you note", "a birthday message", "a wedding speech", "a toast", "a eulogy", "a condolence card",
    "an apology", "a cover letter", "a resignation letter", "a reference letter", "a complaint letter",
    "a letter to my future self", "a love letter", "a retirement speech", "an out-of-office message",
    "a LinkedIn summary", "a dating profile", "a product description", "an Instagram caption", "a tweet",
    "a short story", "a fairy tale", "a bedtime story", "a ghost story", "a poem", "a sonnet", "a haiku", "a limerick",
    "song lyrics", "a rap verse", "a riddle", "a joke", "a pun", "a slogan", "a motto", "a book review",
    "a movie review", "a restaurant review", "a blog post", "a newsletter intro", "a speech for school",
    "an essay introduction", "a persuasive essay", "a summary", "a book report", "a diary entry", "a postcard",
    "a party invitation", "a holiday greeting", "a retirement card", "a get well soon message", "a farewell message",
]
GENERAL_WRITING_ABOUT = [
    "my best friend", "my grandmother", "a colleague who is leaving", "my teacher", "our dog", "autumn", "the ocean",
    "a rainy day", "a lost key", "a dragon who can't fly", "a lighthouse keeper", "the first day of school", "the moon",
    "a small town", "a robot learning to paint", "coffee", "summer holidays", "moving abroad", "an old tree",
    "my sister's graduation", "our team's success", "a new neighbour", "a missed train", "a forgotten birthday",
]
GENERAL_ADVICE = [
    "get better sleep", "stop procrastinating", "make new friends as an adult", "deal with a difficult boss",
    "ask my manager for a raise", "handle a breakup", "support a grieving friend", "talk to my teenager",
    "get my kids to read more", "potty train a toddler", "help my child with homework", "keep my houseplants alive",
    "grow tomatoes", "get rid of fruit flies", "clean a cast iron pan", "remove a coffee stain", "unclog a sink naturally",
    "save for a house", "pay off credit card debt", "start investing with little money", "plan a budget",
    "prepare for a marathon", "build muscle at home", "lose weight safely", "eat more protein", "drink more water",
    "cope with anxiety", "calm down before an exam", "meditate", "be more productive", "stay focused while studying",
    "learn Spanish fast", "improve my English writing", "speak more confidently", "give a good presentation",
    "handle criticism", "set boundaries", "say no politely", "resolve an argument with my partner", "plan a date night",
    "choose a university", "pick a career", "write a good resume", "answer 'what is your weakness' in an interview",
    "travel alone safely", "find cheap flights", "plan a honeymoon", "visit Japan on a budget", "pack for a week in a carry-on",
    "train my cat", "introduce a new dog to my cat", "pick a name for my baby", "throw a surprise party",
    "host a dinner party", "make small talk at networking events", "write better emails", "remember what I read",
    "take better photos with my phone", "start a vegetable garden", "decorate on a budget", "downsize my home",
]
GENERAL_QUESTION_FRAMES = [
    "Who was {p}?", "Tell me about {p}", "What is {p} famous for?", "why is {p} important", "a short biography of {p}",
    "What's the history of {c}?", "Give me three interesting facts about {c}", "Explain {c} to a ten year old",
    "What should everyone know about {c}?", "Recommend a good book about {c}", "I'm curious about {c}",
    "Write {w} for {a}", "Write {w} about {a}", "Can you help me write {w}?", "draft {w} for {a}", "I need {w} for {a}",
    "How can I {v}?", "any tips to {v}", "What's the best way to {v}?", "I want to {v}", "advice on how to {v}",
    "Plan a {n}-day trip to {place}", "What to see in {place}", "What food is {place} known for?",
    "What's the weather like in {place} in spring?", "Is {place} safe for tourists?",
]
GENERAL_PLACES = ["Japan", "Portugal", "Iceland", "Mexico", "Vietnam", "Morocco", "Peru", "Scotland", "Greece",
                  "Norway", "Kenya", "Italy", "Canada", "Thailand", "New Zealand", "Croatia", "Chile", "Egypt",
                  "Paris", "Rome", "Berlin", "Lisbon", "Seoul", "Istanbul", "Vienna", "Budapest", "Dublin", "Cape Town"]
