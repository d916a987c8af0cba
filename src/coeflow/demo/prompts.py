"""Generated router training prompts for the demo CoE.

Each domain supplies its vocabulary: concepts (noun phrases), tasks (verb phrases), error
messages and whole questions; all domains share the same question frames ("What is {c}?",
"how do I {t}"), so a frame says nothing about the expert and the router must learn the
content words. Python's vocabulary is also mined from the running interpreter (module,
builtin and exception names). The held-out test prompts (data/heldout_prompts.jsonl) are
hand-written separately and are not produced here."""

from __future__ import annotations

import random

from coeflow.demo import vocab

# Generated prompts per expert = per_expert (the build's setting) x VOCAB_FACTOR.
VOCAB_FACTOR = 3

CONCEPT_FRAMES = [
    "What is {c}?", "what's {c}", "explain {c}", "Can you explain {c} with an example?", "Tell me about {c}",
    "why would I use {c}", "{c}?", "how does {c} work", "What's the difference between {c} and {c2}?",
    "{c} vs {c2}", "I don't understand {c}", "give me an example of {c}", "When should I use {c}?",
    "what is the purpose of {c}", "describe {c} briefly", "is {c} better than {c2}?",
]
TASK_FRAMES = [
    "How do I {t}?", "how to {t}", "What's the best way to {t}?", "Show me how to {t}", "Can you help me {t}?",
    "I need to {t}", "I want to {t}, how?", "is there a way to {t}", "quick question: how do you {t}",
    "{t}", "Please {t}", "what's the easiest way to {t}", "how would you {t}", "I'm trying to {t} but it fails",
]
ERROR_FRAMES = ["I get {e}", "how to fix {e}", "why do I get {e}", "{e}", "getting this error: {e}", "help: {e}"]

# ---- python ----------------------------------------------------------------------------
PY_CONCEPTS = [
    "a list comprehension", "a generator", "a decorator", "a lambda", "a tuple", "a dictionary", "a set",
    "a class method", "a static method", "a property", "inheritance", "a metaclass", "duck typing", "the GIL",
    "async and await", "an iterator", "a context manager", "the with statement", "slicing", "unpacking",
    "f-strings", "type hints", "a virtual environment", "pip", "a module", "a package", "__init__", "self",
    "*args", "**kwargs", "keyword arguments", "default arguments", "a closure", "the yield keyword",
    "mutable default arguments", "is versus ==", "shallow copy", "deep copy", "a dataclass", "an enum",
    "a namedtuple", "exception handling", "try except", "a traceback", "the global keyword", "nonlocal",
    "recursion in python", "a python script", "the interpreter", "bytecode", "garbage collection",
    "dunder methods", "__repr__", "__str__", "multiple inheritance", "the MRO", "an abstract base class",
    "threading", "multiprocessing", "asyncio tasks", "a coroutine", "the walrus operator", "match statements",
    "list methods", "string methods", "dict.get", "sorted with a key", "zip", "enumerate", "range", "map and filter",
    "a docstring", "PEP 8", "the standard library", "jupyter notebooks", "a numpy array", "a pandas dataframe",
    "an instance variable", "a class variable", "a method", "a constructor", "a module-level variable",
    "an f-string format spec", "the requests library", "a REST API client in python", "pytest fixtures",
    "a unit test", "pip requirements files", "pyproject.toml", "a wheel", "a virtualenv", "conda", "poetry",
    "python packaging", "floating point precision in python", "integer division", "the modulo operator",
    "list indexing", "negative indexes", "string formatting", "bytes vs str", "unicode strings in python",
    "the json module", "the csv module", "the os module", "the sys module", "the re module", "tkinter",
    "a python generator expression", "a frozenset", "a defaultdict", "an OrderedDict", "a deque",
]
PY_TASKS = [
    "remove duplicates from a list", "flatten a nested list", "parse a JSON string into a dict",
    "read a text file line by line", "write a list of strings to a file", "sort a dictionary by its values",
    "format a float with two decimals", "convert a string to an integer", "check if a key exists in a dict",
    "get the current date with datetime", "split a string on commas", "extract numbers from a string with re",
    "count word frequencies with a Counter", "write a class with a property setter",
    "override a method in a subclass", "define a custom exception", "use the logging module",
    "run functions in parallel with multiprocessing", "write an async function", "write my own context manager",
    "make a deep copy of a nested list", "loop over keys and values of a dict", "find the index of an item in a list",
    "pickle an object", "add type hints to a function", "create a venv and install requirements",
    "import a module from a sibling folder", "parse command line arguments with argparse",
    "slice every second element of a list", "join a list of strings", "find common elements of two lists",
    "write a recursive factorial function", "implement a stack class", "implement a linked list class",
    "time a function with timeit", "profile slow python code", "load a csv into a pandas dataframe",
    "plot a chart with matplotlib", "write a flask endpoint", "define __eq__ for a class", "build a dict comprehension",
    "check the type of a variable with isinstance", "turn two lists into a dict", "cache a function with lru_cache",
    "list files with pathlib", "run a subprocess and capture its output", "use a lock between threads",
    "reverse a string", "capitalize each word of a string", "read a json file", "write a json file",
    "download a web page with urllib", "write a unittest test case", "mock a function in tests", "debug with pdb",
    "convert a list to a string", "remove whitespace from a string", "get the length of a list", "shuffle a list",
    "generate random numbers", "round a number", "iterate backwards over a list", "check if a list is empty",
    "append to a list inside a loop", "call a method on an object", "return multiple values from a function",
    "write a python function that returns the largest number in a list", "write a class for a bank account",
    "write a function that counts vowels", "write a script that renames files using os", "install a package with pip",
]
PY_ERRORS = [
    "TypeError: 'NoneType' object is not subscriptable", "ModuleNotFoundError: No module named 'numpy'",
    "AttributeError: 'str' object has no attribute 'append'", "SyntaxError: invalid syntax",
    "KeyError: 'name'", "IndexError: list index out of range", "ValueError: invalid literal for int()",
    "TypeError: unsupported operand type(s) for +: 'int' and 'str'", "RecursionError: maximum recursion depth exceeded",
    "UnboundLocalError: local variable referenced before assignment", "NameError: name 'x' is not defined",
    "TabError: inconsistent use of tabs and spaces", "ImportError: cannot import name",
    "TypeError: missing 1 required positional argument: 'self'", "StopIteration in my generator",
    "TypeError: 'int' object is not iterable", "AttributeError: module has no attribute",
]
PY_MENTION = [" in python", " in Python 3", " using python", " (python)", " with the python standard library"]


# ---- math ------------------------------------------------------------------------------
NAMES = ["Anna", "Ben", "Carlos", "Dana", "Emma", "Farid", "Grace", "Hiro", "Ivy", "Jon", "Lena", "Omar", "Priya", "Sam"]
ITEMS = ["apples", "books", "pencils", "stickers", "cookies", "cards", "coins", "shells", "tickets", "eggs", "candies"]
MATH_CONCEPTS = [
    "a prime number", "a fraction", "a common denominator", "a percentage", "a ratio", "a proportion",
    "the quadratic formula", "a derivative", "an integral", "a limit", "the chain rule", "a logarithm", "an exponent",
    "the Pythagorean theorem", "a hypotenuse", "sine and cosine", "the area of a circle", "pi", "a polynomial",
    "a linear equation", "a system of equations", "a matrix", "a determinant", "a vector", "the dot product",
    "probability", "conditional probability", "permutations", "combinations", "a factorial", "the mean",
    "the median", "the mode", "standard deviation", "variance", "compound interest", "simple interest",
    "the greatest common divisor", "the least common multiple", "a square root", "an irrational number",
    "long division", "the order of operations", "negative numbers", "scientific notation", "significant figures",
    "an arithmetic sequence", "a geometric series", "the slope of a line", "the perimeter", "volume of a sphere",
]
MATH_TASKS = [
    "add fractions with different denominators", "convert a fraction to a percent", "solve a quadratic equation",
    "find the derivative of a polynomial", "integrate by parts", "calculate compound interest",
    "work out a percentage increase", "find the area of a triangle", "compute the volume of a cylinder",
    "solve two equations with two unknowns", "simplify an algebraic expression", "factor a quadratic",
    "calculate an average", "find the probability of drawing two aces", "multiply matrices", "divide decimals",
    "round to two decimal places", "estimate a square root in my head", "convert km/h to m/s",
    "calculate a discount price", "work out the tip on a bill", "find the hypotenuse of a right triangle",
]


def _math_problem(rng: random.Random) -> str:
    a, b, c = rng.randint(2, 99), rng.randint(2, 60), rng.randint(2, 500)
    name, other = rng.sample(NAMES, 2)
    item = rng.choice(ITEMS)
    return rng.choice([
        f"What is {a} plus {b}?", f"what's {a} * {b}", f"Calculate {c} divided by {b}", f"compute {a} - {b} + {c}",
        f"How much is {a} times {b} minus {c}?", f"{a} x {b} = ?", f"what is {c} squared", f"{c} / {b}",
        f"Solve for x: {a}x - {b} = {c}", f"solve {b}x + {a} = {c}", f"Find x if x/{b} = {a}",
        f"What is {b}% of {c}?", f"what percent of {c} is {a}", f"Increase {c} by {b} percent",
        f"{name} has {c} {item} and gives {a} to {other}. How many are left?",
        f"{name} buys {a} {item} for ${b} each. What is the total cost?",
        f"If {name} reads {b} pages a day, how many days to finish a {c} page book?",
        f"{name} and {other} share {c} {item} in the ratio {a % 9 + 1}:{b % 9 + 1}. How many does each get?",
        f"A cyclist rides {c} km at {b} km/h. How long does the ride take?",
        f"A bus covers {c} miles in {b % 9 + 2} hours. How fast is it going?",
        f"A jacket is marked down {b % 50 + 5}% to ${c}. What did it cost before?",
        f"What is the area of a triangle with base {a} and height {b}?", f"Find the perimeter of a {a} by {b} rectangle",
        f"What is the volume of a cube with side {b}?", f"circumference of a circle with diameter {a}",
        f"What is the greatest common divisor of {a} and {c}?", f"lcm of {a} and {b}", f"Is {c} prime?",
        f"prime factorization of {c}", f"What is the mean of {a}, {b} and {c}?", f"median of {a}, {b}, {c}, {a + b}",
        f"Differentiate {a}x^2 + {b}x", f"integral of x^{b % 5 + 1} dx", f"derivative of sin({a}x)",
        f"limit of (x^2 - {a * a})/(x - {a}) as x approaches {a}", f"simplify {a}/{a * (b % 7 + 2)}",
        f"1/{a} + 1/{b} = ?", f"what is {a}/{b} as a decimal", f"convert {c} minutes to hours",
        f"How many seconds are in {a} hours?", f"probability of rolling a total of {b % 11 + 2} with two dice",
        f"probability of {b % 5 + 1} heads in 5 coin tosses", f"how many ways to choose 2 from {a % 9 + 3}",
        f"What is {b % 12 + 1} factorial?", f"solve x^2 - {a}x + {b} = 0", f"slope between ({a},{b}) and ({c},{a})",
        f"${c} at {b % 9 + 1}% interest for {a % 9 + 1} years", f"square root of {c}", f"round {c}.{a} to the nearest ten",
        f"expand (x + {a})(x - {b})", f"log base 2 of {2 ** (a % 12)}", f"{name} is {a}; {other} is {b} years older. Age of {other}?",
        f"{b} grams of sugar per cake, how much for {a % 12 + 2} cakes?", f"${b} per hour for {a % 30 + 10} hours is how much?",
        f"sin {rng.choice([30, 45, 60, 90])} degrees", f"sum of the integers from 1 to {c}", f"{a}^{b % 4 + 2}",
        f"A tank holds {c} litres and drains {b} litres per minute. When is it empty?",
        f"What is {a}% of {b}% of {c}?", f"{name} scored {a}, {b} and {c % 100}. What is the average score?",
    ])


# ---- sql -------------------------------------------------------------------------------
SQL_TABLES = ["users", "orders", "customers", "products", "employees", "departments", "invoices", "payments",
              "students", "courses", "enrollments", "books", "authors", "sales", "accounts", "transactions",
              "movies", "reviews", "suppliers", "inventory", "tickets", "events", "posts", "comments", "items"]
SQL_COLUMNS = ["id", "name", "email", "created_at", "price", "amount", "salary", "status", "country", "city",
               "quantity", "total", "title", "rating", "age", "dept_id", "user_id", "order_date", "category", "score"]
SQL_CONCEPTS = [
    "a primary key", "a foreign key", "an index", "a view", "a trigger", "a stored procedure", "a transaction",
    "normalization", "an INNER JOIN", "a LEFT JOIN", "a RIGHT JOIN", "a FULL OUTER JOIN", "a CROSS JOIN",
    "a self join", "GROUP BY", "HAVING", "WHERE", "ORDER BY", "LIMIT and OFFSET", "DISTINCT", "UNION",
    "UNION ALL", "INTERSECT", "a subquery", "a correlated subquery", "a CTE", "a recursive CTE",
    "a window function", "ROW_NUMBER", "RANK", "DENSE_RANK", "LAG and LEAD", "PARTITION BY", "COALESCE",
    "CASE WHEN", "NULL handling", "a composite key", "a unique constraint", "a NOT NULL constraint",
    "ACID", "an isolation level", "a deadlock", "a query plan", "EXPLAIN ANALYZE", "a table schema",
    "a relational database", "a column data type", "VARCHAR vs TEXT", "an auto increment id", "TRUNCATE",
    "DELETE vs TRUNCATE", "COUNT(*)", "aggregate functions", "a materialized view", "sharding a database",
    "a database schema", "the information_schema", "a query optimizer", "an ORM", "SQL injection",
    "a prepared statement", "a database migration", "a cursor", "an upsert", "ON CONFLICT", "MERGE",
    "a NULL value", "IS NULL", "BETWEEN", "IN with a list", "EXISTS", "NOT EXISTS", "a date function",
    "GROUP_CONCAT", "string_agg", "a database user and GRANT", "a table alias", "a column alias",
]
SQL_TASKS = [
    "select rows from {t} where {c} is null", "count rows of {t} per {c}", "join {t} and {u} on {u}.{d}",
    "get the highest {c} in {t}", "average {c} per {d} from {t}", "list distinct {c} in {t}",
    "sort {t} by {c} descending and keep 10 rows", "total {c} for every {d} in {t}",
    "find {t} without a matching row in {u}", "delete {t} rows older than a month", "change the {c} of one row in {t}",
    "insert a row into {t}", "create a {t} table with {c} and {d} columns", "index {t}.{c}",
    "reference {u}.id from {t}.{d} with a foreign key", "make a view joining {t} and {u}",
    "filter {t} with a subquery on {c}", "keep only groups of {t} with more than 5 rows",
    "rank {t} by {c}", "pivot {t} on {c}", "get the top 3 {c} per {d} in {t}", "combine {t} and {u} with union",
    "find duplicate {c} in {t}", "keep unmatched rows when joining {t} to {u}", "filter {t} between two dates",
    "add a {c} column to {t}", "drop {c} from {t}", "running total of {c} in {t}", "match {c} in {t} with LIKE",
    "replace null {c} values in {t}", "paginate through {t}", "count distinct {c} per month in {t}",
    "back up the {t} table", "copy rows from {t} into {u}", "select the nth highest {c} from {t}",
    "write a query for the {t} table that shows {c} and {d}", "get the top {n} {t} by {c}",
    "show {t} with {c} over {n}", "find {t} with more than {n} rows in {u}", "limit {t} to {n} rows per page",
    "select {t} created in the last {n} days", "increase {c} by {n} percent for all {t}", "query {t} for rows where {c} is above average",
]
SQL_ERRORS = [
    "column must appear in the GROUP BY clause", "ERROR: syntax error at or near \"FROM\"",
    "ambiguous column name: id", "ERROR 1062: Duplicate entry for key 'PRIMARY'",
    "a foreign key constraint fails on insert", "ORA-00942: table or view does not exist",
    "duplicate rows after a join", "subquery returns more than 1 row", "sqlite3.OperationalError: no such table",
    "relation \"orders\" does not exist", "deadlock detected in postgres", "Unknown column in field list",
]
SQL_MENTION = [" in SQL", " in postgres", " in MySQL", " with sqlite", " in a database query", " in T-SQL"]

# ---- shell -----------------------------------------------------------------------------
SHELL_COMMANDS = [
    "ls", "cd", "pwd", "cp", "mv", "rm", "mkdir", "rmdir", "touch", "cat", "less", "head", "tail", "grep", "find",
    "locate", "xargs", "sed", "awk", "cut", "sort", "uniq", "wc", "tr", "tee", "diff", "chmod", "chown", "chgrp",
    "ln", "tar", "gzip", "gunzip", "zip", "unzip", "xz", "ps", "top", "htop", "kill", "killall", "pkill", "pgrep",
    "nice", "nohup", "jobs", "bg", "fg", "df", "du", "free", "mount", "umount", "lsblk", "uname", "hostname",
    "uptime", "whoami", "sudo", "su", "useradd", "passwd", "ssh", "scp", "rsync", "curl", "wget", "ping",
    "traceroute", "netstat", "ss", "ip", "ifconfig", "dig", "nslookup", "nc", "iptables", "systemctl", "journalctl",
    "crontab", "apt", "yum", "brew", "export", "env", "alias", "source", "echo", "printf", "read", "test", "which",
    "man", "history", "screen", "tmux", "watch", "date", "file", "stat", "md5sum", "sha256sum", "lsof", "dmesg",
]
SHELL_CONCEPTS = [
    "a pipe", "stdout and stderr", "redirection", "a shebang", "file permissions", "an environment variable",
    "the PATH", "a symbolic link", "a hard link", "a cron job", "a daemon", "a process id", "a signal",
    "SIGKILL", "a background job", "a subshell", "command substitution", "globbing", "a wildcard", "bashrc",
    "a login shell", "sudoers", "an ssh key", "a mount point", "an inode", "a file descriptor", "exit codes",
    "a here document", "brace expansion", "a systemd unit", "the root user", "a terminal multiplexer",
    "zsh vs bash", "the home directory", "hidden dotfiles", "a tarball", "chmod numbers like 644",
    "the > operator", "the >> operator", "the | operator", "&& and ||", "the & at the end of a command",
    "/dev/null", "the kernel version", "a swap file", "a package manager", "a shell alias", "tab completion",
    "the prompt PS1", "job control", "a zombie process", "load average", "a umask", "setuid",
] + [f"the {c} command" for c in SHELL_COMMANDS]
SHELL_TASKS = [
    "find files by name recursively", "find files changed in the last week", "delete files older than 30 days",
    "grep a pattern recursively", "count lines in a file", "count files in a folder", "sort lines and drop duplicates",
    "check free disk space", "see how big a directory is", "change permissions recursively", "change a file's owner",
    "list running processes", "kill a process by name", "run a command in the background", "download a file with curl",
    "copy files to a server with scp", "sync folders with rsync", "log into a server with an ssh key",
    "generate an ssh key", "tar a directory", "unzip an archive", "gzip a log file", "print lines 10 to 20 of a file",
    "watch a log file grow", "substitute text in a file with sed", "print a column with awk", "cut fields from a csv",
    "add a folder to my PATH", "set an environment variable", "write a for loop in bash", "write an if in a bash script",
    "read a file line by line in bash", "pass arguments to a shell script", "send errors to a file",
    "pipe one command into another", "make a symlink", "create nested directories", "move files matching a pattern",
    "check memory usage", "see which process uses a port", "restart a service with systemctl", "read system logs",
    "install a package with apt", "add a new user with sudo rights", "list hidden files", "compare two files",
    "make a permanent alias", "check the exit status of a command", "rerun a command every few seconds",
    "edit my crontab", "show my ip address", "test whether a port is open", "mount a usb drive",
    "find the biggest files on disk", "rename many files at once", "search my command history",
    "run a script at boot", "make a bash script executable", "check the linux distribution version",
    "list open files of a process", "empty a file without deleting it", "print the current directory",
    "show the last {n} lines of a log", "free port {port}", "find files bigger than {n}MB", "chmod {perm} a folder",
    "delete logs older than {n} days", "keep only the newest {n} backups", "run a job at {n} am with cron",
    "ssh to a server on port {port}", "split a big file into {n}MB pieces", "print line {n} of a file",
]
SHELL_ERRORS = [
    "bash: ./run.sh: Permission denied", "command not found", "No space left on device",
    "Argument list too long", "ssh: connect to host port 22: Connection refused", "tar: Error is not recoverable",
    "rmdir: Directory not empty", "bash: syntax error near unexpected token `done'", "sudo: unable to resolve host",
    "Permission denied (publickey)", "cp: cannot stat: No such file or directory", "Device or resource busy",
]
SHELL_MENTION = [" in bash", " on linux", " from the terminal", " in the shell", " on the command line", " on ubuntu"]

# ---- general ---------------------------------------------------------------------------
GENERAL_CONCEPTS = [
    "the Roman Empire", "black holes", "the French Revolution", "the human brain", "volcanoes", "democracy",
    "the Renaissance", "earthquakes", "the moon landing", "renewable energy", "honey bees", "the Silk Road",
    "dinosaurs", "the Great Wall of China", "jazz", "the printing press", "the Olympic Games", "coral reefs",
    "the industrial revolution", "ancient Egypt", "meditation", "electric cars", "the solar system", "antibiotics",
    "the Cold War", "rainforests", "impressionism", "the Amazon river", "Shakespeare", "chess", "the Vikings",
    "green tea", "espresso", "whales", "glaciers", "sourdough bread", "marathon running", "composting", "birdwatching",
    "the northern lights", "the Eiffel Tower", "a good night's sleep", "a balanced diet", "friendship", "happiness",
    "leadership", "public speaking", "procrastination", "elephants", "hurricanes", "the Byzantine Empire", "opera",
    "the Nile", "tigers", "penguins", "the ozone layer", "evolution", "gravity", "DNA", "the immune system",
    "minimalism", "stoicism", "the Beatles", "ballet", "origami", "yoga", "the Great Depression", "the Aztecs",
    "a mortgage", "a pension", "taxes", "a healthy morning routine", "homesickness", "grief", "kindness",
    "the Industrial Age", "the Ming dynasty", "Greek mythology", "the Reformation", "the Apollo program",
    "the Mediterranean diet", "vitamin D", "allergies", "blood pressure", "caffeine", "the common cold",
    "Van Gogh", "Beethoven", "Frida Kahlo", "Mozart", "Leonardo da Vinci", "poetry", "novels", "film noir",
    "climate", "rain", "snow", "thunderstorms", "tides", "deserts", "mountains", "islands", "rivers",
    "wolves", "owls", "sharks", "butterflies", "ants", "horses", "dolphins", "frogs", "spiders",
    "interest rates", "unemployment", "budgeting", "retirement savings", "credit cards", "supply and demand",
    "philosophy", "ethics", "free will", "the scientific method", "cells", "atoms", "magnetism", "light",
    "the Moon", "Mars", "comets", "stars", "the Big Bang", "telescopes", "electricity", "batteries",
    "football", "tennis", "the Tour de France", "basketball", "swimming", "skiing", "gardening in spring",
    "etiquette", "wedding traditions", "holidays around the world", "Japanese culture", "Italian cooking",
]
GENERAL_TASKS = [
    "write a thank-you note to a teacher", "draft a friendly resignation letter", "write a wedding toast",
    "plan a three day trip to Lisbon", "make a weekly meal plan on a budget", "start running as a beginner",
    "make friends after moving", "prepare for a job interview", "care for a houseplant", "write a bedtime story",
    "plan a birthday party for kids", "learn to play the piano", "save money on groceries", "cook a simple curry",
    "write a product description for a candle", "give a speech at a retirement party", "stay motivated",
    "negotiate my salary", "boil an egg perfectly", "apologise to a friend", "plan a romantic dinner",
    "train my puppy", "rewrite this sentence so it sounds formal", "proofread my paragraph", "say thank you in Japanese",
    "name my new cat", "improve my handwriting", "pack for a beach holiday", "write a short story about a dragon",
    "write a poem for my mother", "choose a good book for a long flight", "keep a conversation going",
    "write a complaint letter to my landlord", "describe a rainy evening in a cafe", "bake a chocolate cake",
    "remove a wine stain", "decorate a small bedroom", "plan a wedding on a budget", "get over jet lag",
    "write an invitation for a dinner party", "choose a gift for my dad", "make my resume stand out",
    "write a speech for a graduation", "write an apology letter", "write a eulogy for my grandfather",
    "write a short poem about the sea", "summarize a novel for a book club", "plan a picnic",
    "prepare a healthy lunch box", "choose a houseplant for a dark room", "keep my kids busy on holiday",
    "relax after a stressful day", "study for an important test", "memorize a speech", "ask for a raise",
    "write a birthday card", "write a reference letter for a student", "reply to a wedding invitation",
    "plan a dinner for {n} guests", "write {n} tips for new parents", "run {n} km without stopping",
    "lose {n} pounds in a healthy way", "celebrate a {n}th anniversary", "describe life in the year {n}00",
]
GENERAL_QUESTIONS = [
    "Who was Cleopatra?", "Why do cats purr?", "When did the Berlin Wall fall?", "Which planet has the most moons?",
    "How tall is Mount Everest?", "What causes the seasons?", "How do rainbows form?", "Who wrote Pride and Prejudice?",
    "What's the tallest animal?", "What is the meaning of life?", "Is it better to rent or buy a house?",
    "What are the rules of rugby?", "How does a bill become a law?", "What does serendipity mean?",
    "How many languages are spoken in India?", "Why do leaves change colour?", "What's the largest ocean?",
    "Who invented the telephone?", "How do bees make honey?", "What is the speed of light?", "Where is Timbuktu?",
    "Why do we dream?", "How old is the universe?", "What language do they speak in Brazil?", "Why is the ocean salty?",
    "How do airplanes stay in the air?", "What is a good name for a coffee shop?", "How should I spend my weekend?",
    "What's the best way to learn a language?", "How can I be more confident?", "Recommend a podcast about history",
    "Which countries border Germany?", "What did the Romans eat?", "How do I stop snoring?", "What is jazz?",
]
PASTE_FRAMES = ["what does `{s}` do?", "explain this line: {s}", "{s}\nwhy does this fail?", "is this correct: {s}",
                "can you simplify {s}", "{s}", "what's wrong with: {s}", "help me understand {s}"]
GENERAL_CREATIVE = ["Write a poem about {c}", "Write a short story involving {c}", "Write a haiku about {c}",
                    "Write a limerick about {c}", "Give me a fun fact about {c}", "Summarize the history of {c}"]


class _Deck:
    """Draws items in a shuffled order and reshuffles when all were drawn, so that a few
    hundred draws cover a long vocabulary list instead of repeating its favourites."""

    def __init__(self, rng: random.Random, items: list[str]):
        self.rng, self.items, self.left = rng, list(dict.fromkeys(items)), []

    def draw(self) -> str:
        if not self.left:
            self.left = self.items[:]
            self.rng.shuffle(self.left)
        return self.left.pop()


def _concept(rng: random.Random, deck: _Deck) -> str:
    frame = rng.choice(CONCEPT_FRAMES)
    return frame.format(c=deck.draw(), c2=deck.draw() if "{c2}" in frame else "")


def _task(rng: random.Random, deck: _Deck, mention: list[str] | None, **slots) -> str:
    slots = {"n": [str(rng.randint(2, 500))], "port": [str(rng.choice([22, 80, 443, 3000, 5432, 8000, 8080, 9000]))],
             "perm": [rng.choice(["600", "644", "700", "755", "777", "+x", "u+rw"])], **slots}
    t = deck.draw().format(**{k: rng.choice(v) for k, v in slots.items()})
    if mention and rng.random() < 0.3:
        t += rng.choice(mention)
    return rng.choice(TASK_FRAMES).format(t=t)


def _style(rng: random.Random, text: str) -> str:
    """Users type in many styles: lower case, no final punctuation."""
    if rng.random() < 0.25:
        text = text.lower()
    if rng.random() < 0.3:
        text = text.rstrip("?.")
    return text


def _python_makers(rng: random.Random) -> list[tuple[float, object]]:
    names = vocab.python_names()
    ideas = _Deck(rng, PY_CONCEPTS + vocab.PY_IDEAS + vocab.PY_LIBRARIES)
    # The interpreter's own names: modules, builtins, exceptions, keywords, dunders, methods,
    # and (a deck of their own, being many) the public functions of common modules.
    core = _Deck(rng, [f"{f}()" for f in names["builtins"]] + names["exceptions"] + names["dunders"]
                 + [f"the {k} keyword" for k in names["keywords"]])
    modules = _Deck(rng, [f"the {m} module" for m in names["modules"]] + names["methods"])
    qualified = _Deck(rng, names["qualified"])
    tasks = _Deck(rng, PY_TASKS + vocab.PY_VERB_TASKS + [t.format(p=p) for p in vocab.PY_PROGRAMS
                                                          for t in rng.sample(vocab.PY_TASK_TEMPLATES, 2)])
    doc_tasks = _Deck(rng, names["doc_tasks"])
    errors = _Deck(rng, PY_ERRORS + vocab.PY_ERRORS_EXTRA)
    lib = _Deck(rng, vocab.PY_LIBRARIES)
    return [
        (2, lambda: _concept(rng, ideas)),
        (2, lambda: _concept(rng, core)),
        (1, lambda: _concept(rng, modules)),
        (1, lambda: _concept(rng, qualified)),
        (4, lambda: _task(rng, tasks, PY_MENTION)),
        (2, lambda: rng.choice(TASK_FRAMES).format(t=doc_tasks.draw() + (rng.choice(PY_MENTION) if rng.random() < 0.6 else ""))),
        (1, lambda: rng.choice(ERROR_FRAMES).format(e=errors.draw())),
        (1, lambda: rng.choice(["{l}: {t}", "{t} with {l}", "using {l}, how do I {t}", "{l} question: {t}"]).format(
            l=lib.draw(), t=tasks.draw().format(n=rng.randint(2, 99)))),
    ]


def _math_makers(rng: random.Random) -> list[tuple[float, object]]:
    concepts = _Deck(rng, MATH_CONCEPTS + vocab.MATH_TERMS)
    tasks = _Deck(rng, MATH_TASKS)
    return [
        (6, lambda: _math_problem(rng)),
        (2, lambda: _concept(rng, concepts)),
        (1, lambda: _task(rng, tasks, None)),
        (2, lambda: _math_more(rng)),
    ]


def _math_more(rng: random.Random) -> str:
    """Units, shapes and functions from the vocabulary, with numbers."""
    a, b = rng.randint(2, 40), rng.choice([0.5, 1.5, 2.5, 3, 7, 12, 45, 100, 250])
    u1, u2 = rng.choice(vocab.MATH_UNITS)
    shape, f = rng.choice(vocab.SHAPES), rng.choice(vocab.MATH_FUNCS)
    return rng.choice([
        f"convert {b} {u1} to {u2}", f"how many {u2} are in {a} {u1}?", f"{b} {u1} in {u2}",
        f"area of a {shape} with side {a}", f"how do I find the area of a {shape}", f"volume of a {shape} of height {a}",
        f"perimeter of a {shape}", f"what is the formula for the surface area of a {shape}",
        f"how many sides does a {shape} have", f"sum of the interior angles of a {shape}",
        f"differentiate {f}", f"derivative of {f}", f"integrate {f} dx", f"find the integral of {f} from 0 to {a}",
        f"limit of {f} as x goes to infinity", f"graph of y = {f}", f"find the maximum of {f} on [0, {a}]",
        f"solve {a}x + {b} = {a * 3}", f"what is {a}% of {b}", f"average speed for {a} km in {b} hours",
        f"{a} workers build a wall in {a + 4} days. How long would {a + 2} workers take?",
        f"mix {a} litres of {b}% juice with water to make it half as strong: how much water?",
        f"the ratio of boys to girls is {a}:{a + 3} and there are {a * 7} children. How many girls?",
        f"a number doubled and increased by {a} gives {a * 5}. find the number",
        f"in {a} years I will be twice as old as I was {a + 2} years ago. how old am I?",
        f"what is the probability of getting at least one six in {a % 6 + 2} rolls",
    ])


def _sql_makers(rng: random.Random) -> list[tuple[float, object]]:
    concepts = _Deck(rng, SQL_CONCEPTS + vocab.SQL_KEYWORDS + vocab.SQL_FUNCTIONS + vocab.SQL_TERMS)
    tasks = _Deck(rng, SQL_TASKS + vocab.SQL_TASKS_EXTRA)
    errors = _Deck(rng, SQL_ERRORS + vocab.SQL_ERRORS_EXTRA)
    tables, columns = SQL_TABLES + vocab.SQL_TABLES_EXTRA, SQL_COLUMNS + vocab.SQL_COLUMNS_EXTRA
    slots = {"t": tables, "u": tables, "c": columns, "d": columns}
    return [
        (4, lambda: _concept(rng, concepts)),
        (6, lambda: _task(rng, tasks, SQL_MENTION, **slots)),
        (1, lambda: rng.choice(ERROR_FRAMES).format(e=errors.draw())),
    ]


def _shell_makers(rng: random.Random) -> list[tuple[float, object]]:
    commands = [c for c, _ in vocab.SHELL_TOOLS]
    concepts = _Deck(rng, SHELL_CONCEPTS + vocab.SHELL_IDEAS + commands)
    tasks = _Deck(rng, SHELL_TASKS + vocab.SHELL_TASKS_EXTRA + [d for _, d in vocab.SHELL_TOOLS])
    tools = _Deck(rng, [f"{c}\t{d}" for c, d in vocab.SHELL_TOOLS])
    errors = _Deck(rng, SHELL_ERRORS + vocab.SHELL_ERRORS_EXTRA)

    def tool_question() -> str:
        c, d = tools.draw().split("\t")
        return rng.choice(["what does {c} do", "{c}?", "how do I use {c}", "{d} with {c}", "is {c} the way to {d}",
                           "`{c}` explained", "{c} vs {c2}", "when to use {c}"]).format(c=c, d=d, c2=rng.choice(commands))

    return [
        (3, lambda: _concept(rng, concepts)),
        (5, lambda: _task(rng, tasks, SHELL_MENTION)),
        (2, tool_question),
        (1, lambda: rng.choice(ERROR_FRAMES).format(e=errors.draw())),
    ]


def _general_makers(rng: random.Random) -> list[tuple[float, object]]:
    topics = _Deck(rng, GENERAL_CONCEPTS + vocab.GENERAL_TOPICS)
    tasks = _Deck(rng, GENERAL_TASKS + vocab.GENERAL_ADVICE)
    slots = {"p": vocab.GENERAL_PEOPLE, "c": GENERAL_CONCEPTS + vocab.GENERAL_TOPICS, "w": vocab.GENERAL_WRITING,
             "a": vocab.GENERAL_WRITING_ABOUT, "v": vocab.GENERAL_ADVICE, "place": vocab.GENERAL_PLACES}

    def framed() -> str:
        return rng.choice(vocab.GENERAL_QUESTION_FRAMES).format(n=rng.randint(2, 10),
                                                               **{k: rng.choice(v) for k, v in slots.items()})

    return [
        (3, lambda: _concept(rng, topics)),
        (2, lambda: _task(rng, tasks, None)),
        (1, lambda: rng.choice(GENERAL_QUESTIONS)),
        (2, lambda: rng.choice(GENERAL_CREATIVE).format(c=topics.draw())),
        (4, framed),
    ]


MAKERS = {"python": _python_makers, "math": _math_makers, "sql": _sql_makers, "shell": _shell_makers,
          "general": _general_makers}


def generate_router_prompts(seed: int, per_expert: int = 400, pasted: dict[str, list[str]] | None = None,
                            vocab_factor: int = VOCAB_FACTOR) -> list[dict]:
    """{"prompt", "expert"} dicts, `per_expert * vocab_factor` per expert (the vocabulary is
    wide: a few hundred prompts would leave most of it unseen), deterministic per seed.
    `pasted` holds short lines per expert (a line of code, a query, a command) that users
    paste into questions; some prompts are built around them."""
    pasted = pasted or {}
    rng = random.Random(f"router-prompts-{seed}")
    out: list[dict] = []
    for expert, makers in MAKERS.items():
        weighted = makers(rng)
        lines = pasted.get(expert)
        if lines:
            weighted = weighted + [(2, lambda lines=lines: rng.choice(PASTE_FRAMES).format(s=rng.choice(lines)))]
        weights = [w for w, _ in weighted]
        want = per_expert * vocab_factor
        seen: set[str] = set()
        tries = 0
        while len(seen) < want and tries < want * 20:
            tries += 1
            make = rng.choices(weighted, weights=weights)[0][1]
            p = _style(rng, make())
            if p not in seen:
                seen.add(p)
                out.append({"prompt": p, "expert": expert})
    return out

def pasted_lines(expert: str, docs: list[str], n: int, seed: int) -> list[str]:
    """Up to n short lines of a domain's corpus that a user might paste into a question:
    a line of code, a query line, a command, a math problem. None for `general`."""
    keep = {
        "python": lambda ln: not ln.startswith(("#", '"', "'")) and any(ch in ln for ch in "(=:["),
        "sql": lambda ln: ln.split(" ", 1)[0] in {"SELECT", "FROM", "WHERE", "JOIN", "LEFT", "GROUP", "ORDER",
                                                   "HAVING", "UPDATE", "INSERT", "DELETE", "WITH", "SET", "CREATE"},
        "shell": lambda ln: not ln.startswith("#") and len(ln.split()) >= 2,
        "math": lambda ln: ln.startswith("Q: "),
    }.get(expert)
    if keep is None:
        return []
    lines = sorted({ln.strip() for d in docs for ln in d.splitlines() if 12 <= len(ln.strip()) <= 80 and keep(ln.strip())})
    rng = random.Random(f"pasted-{expert}-{seed}")
    picked = rng.sample(lines, min(n, len(lines)))
    return [p.removeprefix("Q: ") for p in picked]
