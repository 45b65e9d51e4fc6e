//! Word lists behind the guards. English, plus the plain negators and negating prefixes of
//! Spanish, French, German, Italian and Portuguese (numbers are handled in any script elsewhere).
//!
//! Written from general knowledge (common antonyms, calendar words, well-known places, languages,
//! software and brands), not from the labelled pairs: the pairs measure how well these lists
//! generalise. Words are lower case; single words are matched after light normalisation (see
//! `guards::normalize_word`), so list the singular form.

/// Grammatical negators: each one flips the polarity of a question.
#[rustfmt::skip]
pub(crate) const NEGATORS: &[&str] = &[
    "not", "no", "never", "none", "nothing", "nobody", "nowhere", "neither", "nor", "without",
    "cannot",
    "non", // "non" alone comes from "non-refundable", "non-members"
    // verbs that mean "not do" in questions ("stop" too, before a gerund: see guards)
    "avoid", "avoids", "avoided", "avoiding", "prevent", "prevents", "prevented", "preventing",
    "refrain", "refrains", "refrained", "lack", "lacks", "lacking", "lacked",
    // other languages ("no" and "non" are above): es nunca / jamás / sin; fr pas / jamais /
    // sans ("ne" goes with "pas": one negation, so only "pas" counts); de nicht / kein / nie /
    // ohne; it mai / senza; pt não / nunca / sem is left out ("SEM" in English)
    "nunca", "jamás", "jamas", "pas", "jamais", "sans", "nicht", "kein", "keine", "keinen",
    "keinem", "keiner", "nie", "ohne", "senza", "não", "nao",
];

/// Contractions written without an apostrophe (common in typed queries): word -> base verb.
#[rustfmt::skip]
pub(crate) const BARE_NEGATED: &[(&str, &str)] = &[
    ("dont", "do"), ("doesnt", "does"), ("didnt", "did"), ("cant", "can"), ("wont", "will"),
    ("isnt", "is"), ("arent", "are"), ("wasnt", "was"), ("werent", "were"), ("shouldnt", "should"),
    ("wouldnt", "would"), ("couldnt", "could"), ("hasnt", "has"), ("havent", "have"),
    ("hadnt", "had"), ("mustnt", "must"), ("neednt", "need"), ("aint", "is"),
];

/// Prefixes that negate a word whose base also appears in the pair ("lock"/"unlock",
/// "refundable"/"nonrefundable", "legal"/"illegal", "activate"/"deactivate", Spanish
/// "activo"/"desactivo", French "activer"/"désactiver"). Longest first.
pub(crate) const NEG_PREFIXES: &[&str] = &[
    "non", "dis", "des", "dés", "un", "in", "im", "il", "ir", "de",
];

/// Pairs of opposite poles. A pair is rejected when one side uses only one pole of a concept
/// and the other only the opposite pole. Entries are words or two-word phrases (normalised
/// singular forms). Synonyms share a pole, so "turn on" and "enable" agree.
#[rustfmt::skip]
pub(crate) const OPPOSITES: &[(&[&str], &[&str])] = &[
    (
        &[
            "enable", "enabled", "activate", "activated", "turn on", "switch on", "start", "started",
            // es fr de it pt (accents folded)
            "activar", "activer", "aktivieren", "attivare", "ativar",
        ],
        &[
            "disable", "disabled", "deactivate", "deactivated", "turn off", "switch off", "stop",
            "stopped", "desactivar", "desactiver", "deaktivieren", "disattivare", "desativar",
            "shut off",
        ],
    ),
    (
        &[
            "allow", "allowed", "permit", "permitted", "unblock", "autoriser", "permettre",
            "permitir", "erlauben", "consentire", "permitido", "autorise",
        ],
        &[
            "forbid", "forbidden", "ban", "banned", "prohibit", "prohibited", "block", "blocked",
            "disallow", "disallowed", "bloquer", "interdire", "interdit", "bloquear", "prohibir",
            "prohibido", "blockieren", "verbieten", "verboten", "bloccare", "vietare", "vietato",
            "proibir", "proibido",
        ],
    ),
    (
        &[
            "open", "opens", "opened", "opening", "reopen", "abierto", "abrir", "abre", "abren",
            "ouvert", "ouverte", "ouvrir", "ouvre", "geoffnet", "offen", "offnen", "aperto",
            "aperta", "aprire", "aberto", "aberta",
        ],
        &[
            "close", "closes", "closed", "closing", "shut", "shuts", "cerrado", "cerrada",
            "cerrar", "cierra", "cierran", "ferme", "fermee", "fermer", "geschlossen",
            "schliessen", "chiuso", "chiusa", "chiudere", "fechado", "fechada", "fechar",
        ],
    ),
    (
        &["start", "starts", "started", "begin", "begins", "launch"],
        &["stop", "stops", "stopped", "halt"],
    ),
    (
        &[
            "include", "included", "including", "inclusive", "cover", "covered",
        ],
        &["exclude", "excluded", "excluding", "exclusive", "exclusion"],
    ),
    (
        &["add", "added", "adding"],
        &[
            "remove", "removed", "removing", "delete", "deleted", "deleting",
        ],
    ),
    (
        &[
            "increase", "increased", "raise", "raised", "boost", "higher", "bigger", "larger",
        ],
        &[
            "decrease", "decreased", "reduce", "reduced", "lower", "lowered", "smaller", "cut",
        ],
    ),
    (&["more"], &["less", "fewer"]), (&["most"], &["least"]),
    (
        &["maximum", "max", "highest", "largest", "biggest"],
        &["minimum", "min", "lowest", "smallest"],
    ),
    (
        &["buy", "buying", "bought", "purchase"],
        &["sell", "selling", "sold"],
    ),
    (
        &["deposit", "deposited"],
        &["withdraw", "withdrawal", "withdrawn", "withdrew"],
    ),
    (
        &["import", "imported", "importing"],
        &["export", "exported", "exporting"],
    ),
    (
        &["upload", "uploaded", "uploading"],
        &["download", "downloaded", "downloading"],
    ),
    (
        &["upgrade", "upgraded", "upgrading"],
        &["downgrade", "downgraded", "downgrading"],
    ),
    (
        &["encrypt", "encrypted", "encryption"],
        &["decrypt", "decrypted", "decryption"],
    ),
    (
        &["compress", "compressed", "zip"],
        &["decompress", "decompressed", "unzip", "extract"],
    ),
    (&["before", "within"], &["after"]), (&["above", "over"], &["below", "under"]),
    (
        &["early", "earlier", "earliest"],
        &["late", "later", "latest"],
    ),
    (
        &["hot", "warm", "warmer", "hotter", "heat"],
        &["cold", "cool", "colder", "cooler"],
    ),
    (&["good", "better", "best"], &["bad", "worse", "worst"]),
    (
        &["advantage", "pro", "benefit", "upside", "positive"],
        &[
            "disadvantage", "con", "drawback", "downside", "negative", "risk",
        ],
    ),
    (
        &["safe", "safely", "safety"],
        &["dangerous", "harmful", "unsafe", "hazardous"],
    ),
    (
        &["legal", "lawful", "legally"],
        &["illegal", "unlawful", "illegally"],
    ),
    (&["static", "statically"], &["dynamic", "dynamically"]),
    (
        &["compulsory", "mandatory", "required", "obligatory"],
        &["optional", "voluntary"],
    ),
    (&["public", "publicly"], &["private", "privately"]), (&["online"], &["offline"]),
    (
        &["log in", "login", "sign in", "signin"],
        &["log out", "logout", "sign out", "signout"],
    ),
    (&["check in", "checkin"], &["check out", "checkout"]), (&["opt in"], &["opt out"]),
    (&["full time", "fulltime"], &["part time", "parttime"]),
    (
        &["approve", "approved", "approval", "accept", "accepted"],
        &[
            "reject", "rejected", "decline", "declined", "deny", "denied", "refuse", "refused",
        ],
    ),
    (
        &["pass", "passed", "passing"],
        &["fail", "failed", "failing", "failure"],
    ),
    (
        &["show", "shown", "visible", "unhide", "reveal"],
        &["hide", "hidden", "invisible"],
    ),
    (&["lock", "locked"], &["unlock", "unlocked"]),
    (&["connect", "connected"], &["disconnect", "disconnected"]), (&["follow"], &["unfollow"]),
    (&["mute", "muted"], &["unmute", "unmuted"]),
    (
        &[
            "subscribe", "subscribed", "sign up", "signup", "join", "enrol", "enroll",
        ],
        &["unsubscribe", "unsubscribed", "leave", "quit"],
    ),
    (
        &["install", "installed", "installing"],
        &["uninstall", "uninstalled", "uninstalling"],
    ),
    (
        &["archive", "archived"],
        &["unarchive", "unarchived", "restore"],
    ),
    (
        &["win", "won", "winner", "winning"],
        &["lose", "lost", "loser", "losing"],
    ),
    (&["profit", "gain"], &["loss"]),
    (
        &["send", "sent", "sending", "outgoing", "outbound"],
        &["receive", "received", "receiving", "incoming", "inbound"],
    ),
    (&["first"], &["last"]), (&["oldest", "older"], &["newest", "newer"]),
    (
        &["fastest", "faster", "quickest", "quicker"],
        &["slowest", "slower"],
    ),
    (&["cheapest", "cheaper"], &["priciest", "pricier", "dearer"]), (&["true"], &["false"]),
    (&["busy", "crowded", "packed"], &["quiet", "empty"]),
    (
        &["success", "successful", "successfully"],
        &["unsuccessful", "unsuccessfully"],
    ),
    (&["valid"], &["invalid"]), (&["available"], &["unavailable"]),
    (&["refundable"], &["nonrefundable"]),
];

/// Closed classes of mutually exclusive words: two different members of one class on opposite
/// sides mean a different question ("adults" vs "kids", "km" vs "miles"). Members are mapped to
/// a canonical member first (synonyms), so "kid" and "child" agree. When `additions` is set, a
/// member on one side only is enough ("my password" vs "my colleague's password").
pub(crate) struct Class {
    pub additions: bool,
    pub members: &'static [(&'static str, &'static str)],
}

#[rustfmt::skip]
pub(crate) const CLASSES: &[Class] = &[
    Class {
        // person
        additions: true,
        members: &[
            ("child", "child"), ("children", "child"), ("kid", "child"), ("son", "son"),
            ("daughter", "daughter"), ("baby", "baby"), ("infant", "baby"), ("toddler", "toddler"),
            ("teen", "teen"), ("teenager", "teen"), ("parent", "parent"), ("mother", "mother"),
            ("mom", "mother"), ("mum", "mother"), ("father", "father"), ("dad", "father"),
            ("wife", "spouse"), ("husband", "spouse"), ("spouse", "spouse"),
            ("partner", "partner"), ("girlfriend", "partner"), ("boyfriend", "partner"),
            ("friend", "friend"), ("colleague", "colleague"), ("coworker", "colleague"),
            ("boss", "boss"), ("employee", "employee"), ("employer", "employer"),
            ("tenant", "tenant"), ("landlord", "landlord"), ("student", "student"),
            ("teacher", "teacher"), ("adult", "adult"), ("senior", "senior"),
            ("pensioner", "senior"), ("buyer", "buyer"), ("seller", "seller"),
            ("contractor", "contractor"), ("freelancer", "contractor"),
            ("grandparent", "grandparent"), ("grandmother", "grandparent"),
            ("grandfather", "grandparent"), ("sister", "sibling"), ("brother", "sibling"),
            ("sibling", "sibling"), ("patient", "patient"), ("doctor", "doctor"),
            ("nurse", "nurse"), ("homeowner", "homeowner"), ("nonprofit", "nonprofit"),
            ("charity", "nonprofit"), ("resident", "resident"), ("self", "self"),
        ],
    },
    Class {
        // role
        additions: false,
        members: &[
            ("admin", "admin"), ("administrator", "admin"), ("owner", "owner"), ("user", "user"),
            ("customer", "customer"), ("client", "customer"), ("visitor", "visitor"),
            ("member", "member"), ("guest", "guest"), ("manager", "manager"),
        ],
    },
    Class {
        // gender
        additions: true,
        members: &[
            ("man", "male"), ("men", "male"), ("male", "male"), ("boy", "male"),
            ("woman", "female"), ("women", "female"), ("female", "female"), ("girl", "female"),
        ],
    },
    Class {
        // unit
        additions: false,
        members: &[
            ("km", "km"), ("kilometer", "km"), ("kilometre", "km"), ("mile", "mile"),
            ("meter", "m"), ("metre", "m"), ("foot", "ft"), ("feet", "ft"), ("ft", "ft"),
            ("inch", "in"), ("cm", "cm"), ("centimeter", "cm"), ("mm", "mm"), ("kg", "kg"),
            ("kilo", "kg"), ("kilogram", "kg"), ("lb", "lb"), ("gram", "g"), ("ounce", "oz"),
            ("oz", "oz"), ("liter", "l"), ("litre", "l"), ("ml", "ml"), ("gallon", "gal"),
            ("cup", "cup"), ("tablespoon", "tbsp"), ("tbsp", "tbsp"), ("teaspoon", "tsp"),
            ("tsp", "tsp"), ("celsius", "c"), ("fahrenheit", "f"), ("kb", "kb"), ("mb", "mb"),
            ("gb", "gb"), ("tb", "tb"), ("mbps", "mbps"), ("gbps", "gbps"), ("kwh", "kwh"),
            ("second", "s"), ("minute", "min"), ("hour", "h"), ("day", "d"), ("week", "w"),
            ("month", "mo"), ("year", "y"),
        ],
    },
    Class {
        // currency
        additions: false,
        members: &[
            ("usd", "usd"), ("dollar", "usd"), ("eur", "eur"), ("euro", "eur"), ("gbp", "gbp"),
            ("pound", "gbp"), ("sterling", "gbp"), ("jpy", "jpy"), ("yen", "jpy"), ("chf", "chf"),
            ("franc", "chf"), ("cad", "cad"), ("aud", "aud"), ("inr", "inr"), ("rupee", "inr"),
            ("cny", "cny"), ("yuan", "cny"), ("rmb", "cny"), ("mxn", "mxn"), ("peso", "mxn"),
            ("btc", "btc"), ("bitcoin", "btc"), ("eth", "eth"), ("ethereum", "eth"),
        ],
    },
    Class {
        // tier
        additions: false,
        members: &[
            ("economy", "economy"), ("business", "business"), ("premium", "premium"),
            ("free", "free"), ("basic", "basic"), ("standard", "standard"), ("pro", "pro"),
            ("enterprise", "enterprise"), ("gold", "gold"), ("silver", "silver"),
            ("platinum", "platinum"),
        ],
    },
    Class {
        // platform
        additions: false,
        members: &[
            ("iphone", "iphone"), ("ipad", "ipad"), ("android", "android"), ("mac", "mac"),
            ("macbook", "mac"), ("windows", "windows"), ("linux", "linux"), ("pc", "pc"),
            ("laptop", "laptop"), ("desktop", "desktop"), ("tablet", "tablet"), ("tv", "tv"),
            ("web", "web"), ("browser", "web"),
        ],
    },
    Class {
        // meal
        additions: false,
        members: &[
            ("breakfast", "breakfast"), ("brunch", "brunch"), ("lunch", "lunch"),
            ("dinner", "dinner"), ("supper", "dinner"),
        ],
    },
    Class {
        // colour
        additions: false,
        members: &[
            ("red", "red"), ("blue", "blue"), ("green", "green"), ("yellow", "yellow"),
            ("orange", "orange"), ("purple", "purple"), ("pink", "pink"), ("black", "black"),
            ("white", "white"), ("grey", "grey"), ("gray", "grey"), ("brown", "brown"),
            ("amber", "amber"),
        ],
    },
    Class {
        // food
        additions: false,
        members: &[
            ("chicken", "chicken"), ("beef", "beef"), ("steak", "beef"), ("pork", "pork"),
            ("ham", "pork"), ("bacon", "pork"), ("lamb", "lamb"), ("duck", "duck"),
            ("salmon", "salmon"), ("tuna", "tuna"), ("shrimp", "shrimp"), ("prawn", "shrimp"),
            ("tofu", "tofu"), ("rice", "rice"), ("pasta", "pasta"), ("noodle", "noodle"),
            ("quinoa", "quinoa"), ("couscous", "couscous"), ("oat", "oat"), ("potato", "potato"),
            ("bread", "bread"),
        ],
    },
    Class {
        // channel
        additions: false,
        members: &[
            ("online", "online"), ("paper", "paper"), ("postal", "post"), ("post", "post"),
        ],
    },
    Class {
        // place
        additions: false,
        members: &[
            ("home", "home"), ("abroad", "abroad"), ("overseas", "abroad"), ("international", "abroad"),
            ("domestic", "domestic"), ("local", "local"),
        ],
    },
    Class {
        // direction
        additions: false,
        members: &[
            ("north", "north"), ("south", "south"), ("east", "east"), ("west", "west"),
        ],
    },
    Class {
        // animal
        additions: false,
        members: &[
            ("dog", "dog"), ("puppy", "dog"), ("cat", "cat"), ("kitten", "cat"),
            ("rabbit", "rabbit"), ("bird", "bird"), ("parrot", "bird"), ("hamster", "hamster"),
            ("horse", "horse"), ("fish", "fish"), ("snake", "snake"), ("guinea", "guinea"),
        ],
    },
];

/// Known names (places, languages, software, companies, products) written in lower case; they
/// count as named entities even when the user does not capitalise them.
#[rustfmt::skip]
pub(crate) const NAMES: &[&str] = &[
    // countries and regions
    "afghanistan", "albania", "algeria", "argentina", "armenia", "australia", "austria",
    "azerbaijan", "bahamas", "bangladesh", "barbados", "belarus", "belgium", "belize", "bolivia",
    "bosnia", "botswana", "brazil", "bulgaria", "cambodia", "cameroon", "canada", "chile", "china",
    "colombia", "croatia", "cuba", "cyprus", "czechia", "denmark", "ecuador", "egypt", "england",
    "estonia", "ethiopia", "europe", "fiji", "finland", "france", "germany", "ghana", "greece",
    "guatemala", "haiti", "honduras", "hungary", "iceland", "india", "indonesia", "iran", "iraq",
    "ireland", "israel", "italy", "jamaica", "japan", "jordan", "kazakhstan", "kenya", "korea",
    "kuwait", "laos", "latvia", "lebanon", "libya", "lithuania", "luxembourg", "madagascar",
    "malaysia", "maldives", "malta", "mexico", "moldova", "monaco", "mongolia", "montenegro",
    "morocco", "mozambique", "myanmar", "namibia", "nepal", "netherlands", "holland", "nicaragua",
    "nigeria", "norway", "oman", "pakistan", "panama", "paraguay", "peru", "philippines", "poland",
    "portugal", "qatar", "romania", "russia", "rwanda", "scotland", "senegal", "serbia",
    "singapore", "slovakia", "slovenia", "somalia", "spain", "sweden", "switzerland", "syria",
    "taiwan", "tanzania", "thailand", "tunisia", "turkey", "uganda", "ukraine", "uruguay",
    "uzbekistan", "venezuela", "vietnam", "wales", "yemen", "zambia", "zimbabwe", "uk", "usa",
    "uae", "america", "britain", "asia", "africa", "antarctica", "oceania", "caribbean",
    "scandinavia", "balkans", "schengen", "hawaii", "alaska", "california", "texas", "florida",
    "nevada", "arizona", "colorado", "oregon", "washington", "utah", "ohio", "michigan",
    "illinois", "georgia", "virginia", "carolina", "massachusetts", "pennsylvania", "jersey",
    "tennessee", "kentucky", "louisiana", "alabama", "minnesota", "wisconsin", "iowa", "kansas",
    "missouri", "oklahoma", "idaho", "montana", "wyoming", "vermont", "maine", "ontario", "quebec",
    "bavaria", "tuscany", "catalonia", "andalusia", "bali", "sicily", "sardinia", "crete",
    "corsica", "tasmania",
    // cities
    "london", "paris", "berlin", "madrid", "barcelona", "rome", "milan", "venice", "florence",
    "naples", "lisbon", "porto", "amsterdam", "rotterdam", "brussels", "vienna", "prague",
    "budapest", "warsaw", "krakow", "copenhagen", "stockholm", "oslo", "helsinki", "dublin",
    "edinburgh", "glasgow", "manchester", "liverpool", "birmingham", "leeds", "bristol",
    "brighton", "oxford", "cambridge", "zurich", "geneva", "munich", "hamburg", "frankfurt",
    "cologne", "athens", "istanbul", "moscow", "kyiv", "dubai", "doha", "cairo", "marrakech",
    "nairobi", "lagos", "johannesburg", "tokyo", "kyoto", "osaka", "seoul", "beijing", "shanghai",
    "shenzhen", "hong", "kong", "taipei", "bangkok", "hanoi", "manila", "jakarta", "mumbai",
    "delhi", "bangalore", "bengaluru", "chennai", "kolkata", "karachi", "sydney", "melbourne",
    "brisbane", "perth", "auckland", "wellington", "toronto", "vancouver", "montreal", "calgary",
    "ottawa", "chicago", "boston", "seattle", "portland", "denver", "austin", "dallas", "houston",
    "miami", "orlando", "atlanta", "phoenix", "vegas", "detroit", "philadelphia", "baltimore",
    "nashville", "francisco", "diego", "angeles", "york", "brooklyn", "manhattan", "queens",
    "bronx", "honolulu", "anchorage", "mexico", "cancun", "havana", "lima", "bogota", "santiago",
    "buenos", "aires", "rio", "paulo", "heathrow", "gatwick", "stansted", "luton", "jfk", "lax",
    "sfo",
    // natural languages
    "english", "french", "spanish", "german", "italian", "portuguese", "dutch", "swedish",
    "norwegian", "danish", "finnish", "polish", "czech", "greek", "turkish", "russian",
    "ukrainian", "arabic", "hebrew", "hindi", "urdu", "bengali", "punjabi", "tamil", "chinese",
    "mandarin", "cantonese", "japanese", "korean", "vietnamese", "thai", "indonesian", "malay",
    "tagalog", "swahili", "latin", "welsh", "irish", "gaelic",
    // programming languages, runtimes, frameworks, databases, tools
    "python", "java", "javascript", "typescript", "rust", "golang", "kotlin", "scala", "swift",
    "ruby", "php", "perl", "haskell", "elixir", "erlang", "clojure", "lua", "julia", "matlab",
    "fortran", "cobol", "dart", "bash", "powershell", "sql", "c++", "c#", "nodejs", "deno",
    "react", "angular", "vue", "svelte", "nextjs", "django", "flask", "fastapi", "rails",
    "laravel", "jquery", "bootstrap", "tailwind", "pandas", "numpy", "scipy", "pytorch",
    "tensorflow", "keras", "sklearn", "matplotlib", "axios", "redux", "webpack", "vite", "babel",
    "mysql", "postgres", "postgresql", "sqlite", "mongodb", "redis", "cassandra", "elasticsearch",
    "dynamodb", "oracle", "mariadb", "docker", "kubernetes", "terraform", "ansible", "jenkins",
    "git", "github", "gitlab", "bitbucket", "npm", "pip", "cargo", "poetry", "conda", "maven",
    "gradle", "vscode", "vim", "emacs", "intellij", "xcode", "excel", "powerpoint", "outlook",
    "gmail", "slack", "zoom", "jira", "trello", "notion", "figma", "photoshop", "wordpress",
    "shopify", "salesforce", "hubspot", "mailchimp", "stripe", "paypal", "venmo", "zelle", "wise",
    "revolut", "klarna", "aws", "azure", "gcp", "heroku", "vercel", "netlify", "cloudflare",
    "nginx", "apache", "ubuntu", "debian", "fedora", "centos", "macos", "ios", "ipados",
    "chromeos", "chrome", "firefox", "safari", "json", "yaml", "xml", "csv", "pdf", "png", "jpg",
    "jpeg", "gif", "svg", "html", "css", "http", "https", "graphql", "grpc",
    // companies, products, services
    "google", "apple", "microsoft", "amazon", "facebook", "instagram", "whatsapp", "twitter",
    "tiktok", "youtube", "linkedin", "reddit", "snapchat", "pinterest", "netflix", "spotify",
    "hulu", "disney", "uber", "lyft", "airbnb", "vrbo", "expedia", "tesla", "toyota", "honda",
    "ford", "bmw", "audi", "volkswagen", "samsung", "sony", "nintendo", "playstation", "xbox",
    "kindle", "galaxy", "sonos", "bose", "fitbit", "garmin", "costco", "walmart", "ikea",
    "starbucks", "ryanair", "easyjet", "lufthansa", "emirates", "qantas", "jetblue", "southwest",
    "fidelity", "vanguard", "schwab", "robinhood", "citi", "citibank", "hsbc", "barclays",
    "lloyds", "santander", "natwest", "monzo", "mastercard", "amex", "verizon", "vodafone",
    "comcast", "openai", "chatgpt", "claude", "anthropic", "gemini", "copilot", "dropbox",
    "onedrive", "icloud",
];
