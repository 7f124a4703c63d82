//! CEL for `x-kubernetes-validations`: the interpreter from the `cel` crate
//! plus the Kubernetes library functions the CRDs use, so a rule evaluates
//! offline as it does in the API server.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use cel::common::ast::{Expr, IdedExpr};
use cel::extractors::This;
use cel::objects::{Key, Map};
use cel::{Context, Env, ExecutionError, Program, Value};

use super::go_url;

/// Compiled rules, each compiled once, and the context with the Kubernetes functions.
pub struct Cel {
    env: Arc<Env>,
    root: Context<'static, 'static>,
    programs: HashMap<String, Result<Program, String>>,
    /// Per prepared expression, the fields of `self` it selects; `None`: all of `self`.
    reads: HashMap<String, Option<BTreeSet<String>>>,
}

impl Default for Cel {
    fn default() -> Self {
        Self::new()
    }
}

impl Cel {
    pub fn new() -> Self {
        let mut env = Env::stdlib();
        // The Kubernetes CEL environment has cel-go's strings and lists
        // extensions; these are the crate's ports of them.
        let _ = cel::extensions::strings(&mut env);
        let _ = cel::extensions::lists(&mut env);
        let env = Arc::new(env);
        let mut root = Context::with_env(env.clone());
        register_kubernetes_library(&mut root);
        Self { env, root, programs: HashMap::new(), reads: HashMap::new() }
    }

    /// Compiles `source` unless already compiled.
    pub fn prepare(&mut self, source: &str) {
        if !self.programs.contains_key(source) {
            let program = self.env.compile(source).map_err(|e| e.to_string());
            self.programs.insert(source.to_string(), program);
            self.reads.insert(source.to_string(), fields_of_self(source));
        }
    }

    /// The fields of `self` a prepared expression selects, or `None` when it may read
    /// all of `self` (or was not prepared): binding only those is enough for it.
    pub fn reads(&self, source: &str) -> Option<&BTreeSet<String>> {
        self.reads.get(source)?.as_ref()
    }

    /// A scope with `self` bound to `this`, for every rule of one schema node:
    /// the `cel` crate converts a bound value into its own form, so bind it once.
    pub fn bind(&self, this: Value) -> Context<'_, 'static> {
        let mut scope = self.root.new_inner_scope();
        scope.add_variable_from_value("self", this);
        scope
    }

    /// Evaluates a prepared expression in a scope from [`Cel::bind`].
    pub fn eval(&self, source: &str, scope: &Context<'_, 'static>) -> Result<Value, String> {
        match self.programs.get(source) {
            Some(Ok(program)) => program.execute(scope).map_err(|e| e.to_string()),
            Some(Err(error)) => Err(format!("compilation error: {error}")),
            None => Err("rule was not prepared".into()),
        }
    }
}

/// The fields of `self` an expression selects (`self.a`, `has(self.b)`), or `None`
/// when it uses `self` whole (`size(self)`, `self.all(...)`) or in a form this does
/// not follow (lists, maps, structs): then the whole value is bound, as before.
pub fn fields_of_self(source: &str) -> Option<BTreeSet<String>> {
    let expr = cel::parser::Parser::new().parse(source).ok()?;
    let mut fields = BTreeSet::new();
    selects_only(&expr, &mut fields).then_some(fields)
}

/// Adds to `fields` what `expr` selects of `self`; false if it uses `self` otherwise.
fn selects_only(expr: &IdedExpr, fields: &mut BTreeSet<String>) -> bool {
    match &expr.expr {
        Expr::Select(select) => match &select.operand.expr {
            Expr::Ident(name) if name == "self" => {
                fields.insert(select.field.clone());
                true
            }
            _ => selects_only(&select.operand, fields),
        },
        Expr::Ident(name) => name != "self",
        Expr::Literal(_) => true,
        Expr::Call(call) => {
            call.target.iter().all(|t| selects_only(t, fields)) && call.args.iter().all(|a| selects_only(a, fields))
        }
        // A comprehension's own variables may shadow `self`; its uses then count as
        // uses of `self`, which only ever binds more.
        Expr::Comprehension(c) => [&c.iter_range, &c.accu_init, &c.loop_cond, &c.loop_step, &c.result]
            .into_iter()
            .all(|e| selects_only(e, fields)),
        _ => false,
    }
}

fn register_kubernetes_library(ctx: &mut Context<'static, 'static>) {
    // Names are new to the standard environment, so registration cannot conflict;
    // a failure would be a programming error caught by the tests below.
    let results = [
        ctx.add_function("isURL", |s: Arc<String>| go_url::parse_request_uri(&s).is_ok()),
        ctx.add_function("url", url),
        ctx.add_function("getScheme", |This(u): This<Value>| url_part(u, "scheme")),
        ctx.add_function("getHost", |This(u): This<Value>| url_part(u, "host")),
        ctx.add_function("getHostname", |This(u): This<Value>| url_part(u, "hostname")),
        ctx.add_function("getPort", |This(u): This<Value>| url_part(u, "port")),
        ctx.add_function("getEscapedPath", |This(u): This<Value>| url_part(u, "escapedPath")),
        ctx.add_function("getQuery", |This(u): This<Value>| url_part(u, "query")),
        ctx.add_function("matches", matches),
        ctx.add_function("find", find),
        ctx.add_function("sum", sum),
        ctx.add_function("isSorted", is_sorted),
        ctx.add_function("findAll", find_all),
    ];
    debug_assert!(results.iter().all(Result::is_ok), "{results:?}");
}

const URL_MARKER: &str = "\u{0}url";

/// `url(string)`: a URL value, represented as a map only the accessors read.
fn url(s: Arc<String>) -> Result<Value, ExecutionError> {
    let parsed = go_url::parse_request_uri(&s).map_err(|e| {
        ExecutionError::function_error("url", format!("URL parse error during conversion from string: {e}"))
    })?;
    let mut query: HashMap<Key, Value> = HashMap::new();
    for pair in parsed.raw_query.split(['&']).filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let entry = query.entry(Key::String(Arc::new(k.to_string()))).or_insert_with(|| Value::List(Arc::new(vec![])));
        if let Value::List(list) = entry {
            Arc::make_mut(list).push(Value::String(Arc::new(v.to_string())));
        }
    }
    let mut map: HashMap<Key, Value> = HashMap::new();
    let mut put = |k: &str, v: Value| {
        map.insert(Key::String(Arc::new(k.to_string())), v);
    };
    put(URL_MARKER, Value::Bool(true));
    put("scheme", parsed.scheme.clone().into());
    put("host", parsed.host.clone().into());
    put("hostname", parsed.hostname().to_string().into());
    put("port", parsed.port().to_string().into());
    put("escapedPath", parsed.escaped_path().to_string().into());
    put("query", Value::Map(Map::from(query)));
    Ok(Value::Map(Map::from(map)))
}

fn url_part(value: Value, part: &str) -> Result<Value, ExecutionError> {
    let Value::Map(map) = &value else {
        return Err(ExecutionError::function_error(part, "no such overload"));
    };
    if !map.map.contains_key(&Key::String(Arc::new(URL_MARKER.to_string()))) {
        return Err(ExecutionError::function_error(part, "no such overload"));
    }
    map.map
        .get(&Key::String(Arc::new(part.to_string())))
        .cloned()
        .ok_or_else(|| ExecutionError::function_error(part, "no such overload"))
}

thread_local! {
    /// Compiled patterns: the same few patterns run for every object, and compiling
    /// one costs far more than matching it.
    static REGEXES: std::cell::RefCell<HashMap<String, Result<regex::Regex, String>>> =
        std::cell::RefCell::new(HashMap::new());
}

/// Whether `text` contains a match of `pattern` (RE2 syntax, as in Kubernetes), compiled once per thread.
pub fn is_match(pattern: &str, text: &str) -> Result<bool, String> {
    with_regex(pattern, |re| re.is_match(text))
}

fn with_regex<T>(pattern: &str, f: impl FnOnce(&regex::Regex) -> T) -> Result<T, String> {
    REGEXES.with(|cache| {
        let mut cache = cache.borrow_mut();
        // Look up by `&str` first: a hit, the common case, then allocates nothing.
        if !cache.contains_key(pattern) {
            cache.insert(pattern.to_string(), regex::Regex::new(pattern).map_err(|e| e.to_string()));
        }
        match cache.get(pattern) {
            Some(Ok(re)) => Ok(f(re)),
            Some(Err(e)) => Err(e.clone()),
            None => Err(format!("pattern {pattern:?} not cached")),
        }
    })
}

/// `s.matches(re)`: the standard function, with the compiled pattern cached
/// (the `cel` crate compiles it on every call).
fn matches(This(s): This<Arc<String>>, pattern: Arc<String>) -> Result<bool, ExecutionError> {
    is_match(&pattern, &s)
        .map_err(|e| ExecutionError::function_error("matches", format!("'{pattern}' not a valid regex:\n{e}")))
}

/// Kubernetes regex library: `s.find(re)`, the first match or "".
fn find(This(s): This<Arc<String>>, pattern: Arc<String>) -> Result<Value, ExecutionError> {
    with_regex(&pattern, |re| re.find(&s).map(|m| m.as_str().to_string()).unwrap_or_default().into())
        .map_err(|e| ExecutionError::function_error("find", e))
}

/// Kubernetes regex library: `s.findAll(re)`, every match.
fn find_all(This(s): This<Arc<String>>, pattern: Arc<String>) -> Result<Value, ExecutionError> {
    with_regex(&pattern, |re| {
        let all: Vec<Value> = re.find_iter(&s).map(|m| Value::from(m.as_str().to_string())).collect();
        Value::List(Arc::new(all))
    })
    .map_err(|e| ExecutionError::function_error("findAll", e))
}

/// Kubernetes lists library: `list.sum()` of ints, uints or doubles (0 when empty).
fn sum(This(list): This<Arc<Vec<Value>>>) -> Result<Value, ExecutionError> {
    let overflow = || ExecutionError::function_error("sum", "integer overflow");
    match list.first() {
        None | Some(Value::Int(_)) => list
            .iter()
            .try_fold(0i64, |acc, v| match v {
                Value::Int(i) => acc.checked_add(*i).ok_or_else(overflow),
                _ => Err(ExecutionError::function_error("sum", "mixed types")),
            })
            .map(Value::Int),
        Some(Value::UInt(_)) => list
            .iter()
            .try_fold(0u64, |acc, v| match v {
                Value::UInt(i) => acc.checked_add(*i).ok_or_else(overflow),
                _ => Err(ExecutionError::function_error("sum", "mixed types")),
            })
            .map(Value::UInt),
        Some(Value::Float(_)) => list
            .iter()
            .try_fold(0f64, |acc, v| match v {
                Value::Float(f) => Ok(acc + f),
                _ => Err(ExecutionError::function_error("sum", "mixed types")),
            })
            .map(Value::Float),
        Some(other) => Err(ExecutionError::function_error("sum", format!("no such overload for {other:?}"))),
    }
}

/// Kubernetes lists library: `list.isSorted()`.
fn is_sorted(This(list): This<Arc<Vec<Value>>>) -> Result<Value, ExecutionError> {
    let sorted = list.windows(2).all(|w| w[0].partial_cmp(&w[1]).is_some_and(|o| o.is_le()));
    Ok(Value::Bool(sorted))
}

/// CEL's escaping of property names (Kubernetes: names that are CEL keywords,
/// or contain `__`, `.`, `-` or `/`, are written `__keyword__`, `__dot__`, ...).
pub fn escape_property(name: &str) -> Option<String> {
    const RESERVED: [&str; 21] = [
        "true",
        "false",
        "null",
        "in",
        "as",
        "break",
        "const",
        "continue",
        "else",
        "for",
        "function",
        "if",
        "import",
        "let",
        "loop",
        "package",
        "namespace",
        "return",
        "var",
        "void",
        "while",
    ];
    if RESERVED.contains(&name) {
        return Some(format!("__{name}__"));
    }
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || "_.-/".contains(c));
    if !first_ok || !name.chars().all(|c| c.is_ascii_alphanumeric() || "_.-/".contains(c)) {
        return None;
    }
    Some(
        name.replace("__", "__underscores__")
            .replace('.', "__dot__")
            .replace('-', "__dash__")
            .replace('/', "__slash__"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(rule: &str, this: Value) -> Result<Value, String> {
        let mut cel = Cel::new();
        cel.prepare(rule);
        cel.eval(rule, &cel.bind(this))
    }

    fn s(v: &str) -> Value {
        Value::from(v.to_string())
    }

    #[test]
    fn the_fields_a_rule_selects_are_known() {
        let set = |fields: &[&str]| Some(fields.iter().map(|f| f.to_string()).collect::<BTreeSet<_>>());
        assert_eq!(fields_of_self("size(self.metadata.name) <= 63"), set(&["metadata"]));
        assert_eq!(
            fields_of_self("self.kind != 'ServiceAccount' || has(self.__namespace__)"),
            set(&["kind", "__namespace__"])
        );
        assert_eq!(fields_of_self("size(self) <= 128"), None);
        assert_eq!(fields_of_self("self.all(k, k.startsWith('a'))"), None);
        assert_eq!(fields_of_self("[self.a].size() == 1"), None, "a list literal is not followed");
        assert_eq!(fields_of_self("self.a.exists(x, x == self.b)"), set(&["a", "b"]));
        assert_eq!(fields_of_self("not valid ("), None);
    }

    #[test]
    fn url_functions_follow_go() {
        let rule = "isURL(self) && url(self).getScheme() in ['http', 'https'] && url(self).getHostname() != ''";
        assert_eq!(run(rule, s("https://api.pay-i.com")), Ok(Value::Bool(true)));
        assert_eq!(run(rule, s("ftp://api.pay-i.com")), Ok(Value::Bool(false)));
        assert_eq!(run(rule, s("https:api.pay-i.com")), Ok(Value::Bool(false)));
        assert_eq!(run(rule, s("api.pay-i.com")), Ok(Value::Bool(false)));
        assert_eq!(run("url(self).getHost()", s("http://[::1]:80/x")), Ok(s("[::1]:80")));
        assert_eq!(run("url(self).getPort()", s("http://h:80/x")), Ok(s("80")));
        assert_eq!(run("url(self).getEscapedPath()", s("http://h/a%20b")), Ok(s("/a%20b")));
        assert_eq!(run("url(self).getQuery()['a'][1]", s("http://h/?a=1&a=2")), Ok(s("2")));
        assert!(run("url(self).getHost()", s("nope")).is_err());
    }

    #[test]
    fn durations_matches_and_macros() {
        let every = "self.matches('^([0-9]+(\\\\.[0-9]+)?(s|m|h))+$') && duration(self) >= duration('1h')";
        assert_eq!(run(every, s("720h")), Ok(Value::Bool(true)));
        assert_eq!(run(every, s("1h30m")), Ok(Value::Bool(true)));
        assert_eq!(run(every, s("59m")), Ok(Value::Bool(false)));
        assert_eq!(run(every, s("1d")), Ok(Value::Bool(false)));
        let list = Value::List(Arc::new(vec![s("a"), s("")]));
        assert_eq!(run("self.all(n, size(n) > 0 && size(n) <= 63)", list), Ok(Value::Bool(false)));
        assert_eq!(run("self.startsWith('system:')", s("system:admin")), Ok(Value::Bool(true)));
        assert_eq!(run("self.lowerAscii()", s("AbC")), Ok(s("abc")));
        assert_eq!(run("self.find('[0-9]+')", s("ab12c")), Ok(s("12")));
        assert_eq!(run("matches(self, '^a')", s("abc")), Ok(Value::Bool(true)));
        assert!(run("self.matches('(')", s("abc")).unwrap_err().contains("not a valid regex"));
        assert_eq!(run("size(self)", s("héllo")), Ok(Value::Int(5)));
        let mut map: HashMap<Key, Value> = HashMap::new();
        map.insert(Key::String(Arc::new("ab".into())), s("cde"));
        map.insert(Key::String(Arc::new("f".into())), s(""));
        assert_eq!(run("self.map(k, size(k) + size(self[k])).sum()", Value::Map(Map::from(map))), Ok(Value::Int(6)));
        assert_eq!(run("[].sum() == 0 && [1, 2].isSorted() && ![2, 1].isSorted()", Value::Null), Ok(Value::Bool(true)));
    }

    #[test]
    fn escaped_properties_are_reachable() {
        let mut map: HashMap<Key, Value> = HashMap::new();
        map.insert(Key::String(Arc::new(escape_property("namespace").unwrap())), s("ns"));
        map.insert(Key::String(Arc::new("kind".into())), s("ServiceAccount"));
        let rule = "self.kind != 'ServiceAccount' || (has(self.__namespace__) && size(self.__namespace__) > 0)";
        assert_eq!(run(rule, Value::Map(Map::from(map))), Ok(Value::Bool(true)));
        assert_eq!(escape_property("a.b-c/d__e").as_deref(), Some("a__dot__b__dash__c__slash__d__underscores__e"));
        assert_eq!(escape_property("9lives"), None);
    }
}
