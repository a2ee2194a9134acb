//! Likely duplicate contacts (design card; PRD F7): the scoring, in one place.
//!
//! Two contacts are likely the same person when they share a normalised email or phone
//! number, or when their names are near-identical and they belong to the same organization
//! or share a company email domain. The database finds candidates by index (same email,
//! same phone digits, trigram-similar names in the tenant) and asks [`score`] about each;
//! the weights and thresholds below are the only place these rules live. Organizations
//! are compared the same way on their website's domain and their names ([`score_company`]).

/// What is compared.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Person<'a> {
    pub first_name: &'a str,
    pub last_name: &'a str,
    pub email: Option<&'a str>,
    pub phone: Option<&'a str>,
    pub organization_id: Option<&'a str>,
}

/// Why two contacts look alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    SameEmail,
    SamePhone,
    SimilarNameSameOrganization,
    SimilarNameSameEmailDomain,
    SameWebsite,
    SimilarCompanyName,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::SameEmail => "same_email",
            Reason::SamePhone => "same_phone",
            Reason::SimilarNameSameOrganization => "similar_name_same_organization",
            Reason::SimilarNameSameEmailDomain => "similar_name_same_email_domain",
            Reason::SameWebsite => "same_website",
            Reason::SimilarCompanyName => "similar_name",
        }
    }
}

/// The weight of each reason (a score is the highest weight that applies, times the name
/// similarity for the name-based ones).
pub const WEIGHT_SAME_EMAIL: f64 = 1.0;
pub const WEIGHT_SAME_PHONE: f64 = 0.9;
pub const WEIGHT_NAME_SAME_ORGANIZATION: f64 = 0.85;
pub const WEIGHT_NAME_SAME_DOMAIN: f64 = 0.75;
/// Names at least this similar (0–1) count as the same name.
pub const NAME_SIMILARITY: f64 = 0.85;
/// Scores below this are not reported.
pub const REPORT_THRESHOLD: f64 = 0.6;
/// Phone numbers are compared on their last this many digits (so `+1 555 010 0200` and
/// `(555) 010-0200` match); shorter numbers must match whole.
pub const PHONE_SIGNIFICANT_DIGITS: usize = 10;

/// Mail providers whose domain says nothing about the company.
const FREE_MAIL_DOMAINS: [&str; 12] = [
    "gmail.com",
    "googlemail.com",
    "outlook.com",
    "hotmail.com",
    "live.com",
    "yahoo.com",
    "icloud.com",
    "me.com",
    "aol.com",
    "proton.me",
    "protonmail.com",
    "gmx.de",
];

/// A likely duplicate: its score (0–1) and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Match {
    pub score: f64,
    pub reason: Reason,
}

/// The digits of a phone number without a trailing extension ("x12", "ext. 12"), as the
/// database's `phone_digits` column holds them, or `None` when fewer than four are left.
pub fn phone_digits(phone: &str) -> Option<String> {
    let lower = phone.trim().to_ascii_lowercase();
    let without_extension = lower
        .rfind('x')
        .filter(|&at| {
            // "x12", "ext 12", "ext. 12": after the x, an optional "t", dots and spaces, digits.
            let tail = lower[at + 1..].trim_start_matches(['t', '.', ' ']);
            !tail.is_empty() && tail.chars().all(|c| c.is_ascii_digit() || c == ' ')
        })
        .map(|at| lower[..at].trim_end_matches('e'))
        .unwrap_or(&lower);
    let digits: String = without_extension
        .chars()
        .filter(char::is_ascii_digit)
        .collect();
    (digits.len() >= 4).then_some(digits)
}

fn same_phone(a: &str, b: &str) -> bool {
    match (phone_digits(a), phone_digits(b)) {
        (Some(a), Some(b))
            if a.len() >= PHONE_SIGNIFICANT_DIGITS && b.len() >= PHONE_SIGNIFICANT_DIGITS =>
        {
            a[a.len() - PHONE_SIGNIFICANT_DIGITS..] == b[b.len() - PHONE_SIGNIFICANT_DIGITS..]
        }
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

fn normalized_email(e: &str) -> Option<String> {
    let e = e.trim().to_lowercase();
    e.contains('@').then_some(e)
}

/// The company domain of an address (`None` for free mail providers).
pub fn company_domain(email: &str) -> Option<String> {
    let domain = normalized_email(email)?.rsplit_once('@')?.1.to_owned();
    (!domain.is_empty() && !FREE_MAIL_DOMAINS.contains(&domain.as_str())).then_some(domain)
}

/// Lowercased words of a name, accents folded for the common Latin letters.
fn name_words(first: &str, last: &str) -> Vec<String> {
    format!("{first} {last}")
        .split(|c: char| c.is_whitespace() || c == '-' || c == '.' || c == ',')
        .filter(|w| !w.is_empty())
        .map(|w| w.chars().map(fold).collect::<String>().to_lowercase())
        .collect()
}

fn fold(c: char) -> char {
    match c {
        'á' | 'à' | 'â' | 'ä' | 'ã' | 'å' | 'Á' | 'À' | 'Â' | 'Ä' | 'Ã' | 'Å' => 'a',
        'é' | 'è' | 'ê' | 'ë' | 'É' | 'È' | 'Ê' | 'Ë' => 'e',
        'í' | 'ì' | 'î' | 'ï' | 'Í' | 'Ì' | 'Î' | 'Ï' => 'i',
        'ó' | 'ò' | 'ô' | 'ö' | 'õ' | 'ø' | 'Ó' | 'Ò' | 'Ô' | 'Ö' | 'Õ' | 'Ø' => 'o',
        'ú' | 'ù' | 'û' | 'ü' | 'Ú' | 'Ù' | 'Û' | 'Ü' => 'u',
        'ñ' | 'Ñ' => 'n',
        'ç' | 'Ç' => 'c',
        'ß' => 's',
        other => other,
    }
}

/// How alike two names are, 0–1: the better of the names as written and with their words
/// sorted (so "Smith John" matches "John Smith").
pub fn name_similarity(a: &Person<'_>, b: &Person<'_>) -> f64 {
    let (mut wa, mut wb) = (
        name_words(a.first_name, a.last_name),
        name_words(b.first_name, b.last_name),
    );
    if wa.is_empty() || wb.is_empty() {
        return 0.0;
    }
    let similarity = |wa: &[String], wb: &[String]| {
        // One edit in a word of one or two letters ("Li" and "Lu") is another name, not a
        // typo, however alike the rest is.
        let short_words_differ = wa.len() == wb.len()
            && wa
                .iter()
                .zip(wb)
                .any(|(x, y)| x.chars().count() <= 2 && y.chars().count() <= 2 && x != y);
        if short_words_differ {
            0.0
        } else {
            strsim::normalized_damerau_levenshtein(&wa.join(" "), &wb.join(" "))
        }
    };
    let as_written = similarity(&wa, &wb);
    wa.sort();
    wb.sort();
    as_written.max(similarity(&wa, &wb))
}

/// Whether `b` is a likely duplicate of `a`, with its score and reason.
pub fn score(a: &Person<'_>, b: &Person<'_>) -> Option<Match> {
    let best = |m: Option<Match>, score: f64, reason: Reason| match m {
        Some(m) if m.score >= score => Some(m),
        _ => Some(Match { score, reason }),
    };
    let mut found = None;
    if let (Some(ea), Some(eb)) = (
        a.email.and_then(normalized_email),
        b.email.and_then(normalized_email),
    ) {
        if ea == eb {
            found = best(found, WEIGHT_SAME_EMAIL, Reason::SameEmail);
        }
    }
    if let (Some(pa), Some(pb)) = (a.phone, b.phone) {
        if same_phone(pa, pb) {
            found = best(found, WEIGHT_SAME_PHONE, Reason::SamePhone);
        }
    }
    let similarity = name_similarity(a, b);
    if similarity >= NAME_SIMILARITY {
        if a.organization_id.is_some() && a.organization_id == b.organization_id {
            found = best(
                found,
                WEIGHT_NAME_SAME_ORGANIZATION * similarity,
                Reason::SimilarNameSameOrganization,
            );
        }
        let domain = |p: &Person<'_>| p.email.and_then(company_domain);
        if domain(a).is_some() && domain(a) == domain(b) {
            found = best(
                found,
                WEIGHT_NAME_SAME_DOMAIN * similarity,
                Reason::SimilarNameSameEmailDomain,
            );
        }
    }
    found.filter(|m| m.score >= REPORT_THRESHOLD)
}

/// What two organizations are compared on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Company<'a> {
    pub name: &'a str,
    /// The website's host without `www.`.
    pub website_domain: Option<&'a str>,
}

pub const WEIGHT_SAME_WEBSITE: f64 = 0.95;
pub const WEIGHT_SIMILAR_COMPANY_NAME: f64 = 0.8;
/// Company names at least this similar (after dropping legal forms) count as the same.
pub const COMPANY_NAME_SIMILARITY: f64 = 0.85;

/// Legal forms that say nothing about which company it is.
const LEGAL_FORMS: [&str; 16] = [
    "inc",
    "incorporated",
    "llc",
    "ltd",
    "limited",
    "gmbh",
    "ag",
    "corp",
    "corporation",
    "co",
    "company",
    "sa",
    "sas",
    "plc",
    "bv",
    "srl",
];

/// A company name's words, lowercased, accents folded, without punctuation or legal forms.
fn company_words(name: &str) -> Vec<String> {
    let words: Vec<String> = name
        .split(|c: char| !c.is_alphanumeric() && c != '&')
        .filter(|w| !w.is_empty())
        .map(|w| w.chars().map(fold).collect::<String>().to_lowercase())
        .collect();
    let meaningful: Vec<String> = words
        .iter()
        .filter(|w| !LEGAL_FORMS.contains(&w.as_str()))
        .cloned()
        .collect();
    if meaningful.is_empty() {
        words
    } else {
        meaningful
    }
}

/// Whether organization `b` is a likely duplicate of `a`.
pub fn score_company(a: &Company<'_>, b: &Company<'_>) -> Option<Match> {
    let mut found: Option<Match> = None;
    let domain = |c: &Company<'_>| {
        c.website_domain
            .map(|d| d.trim().trim_start_matches("www.").to_ascii_lowercase())
            .filter(|d| !d.is_empty())
    };
    if domain(a).is_some() && domain(a) == domain(b) {
        found = Some(Match {
            score: WEIGHT_SAME_WEBSITE,
            reason: Reason::SameWebsite,
        });
    }
    let (wa, wb) = (company_words(a.name), company_words(b.name));
    if !wa.is_empty() && !wb.is_empty() {
        let similarity = strsim::normalized_damerau_levenshtein(&wa.join(" "), &wb.join(" "));
        let weighted = WEIGHT_SIMILAR_COMPANY_NAME * similarity;
        if similarity >= COMPANY_NAME_SIMILARITY
            && found.as_ref().is_none_or(|m| m.score < weighted)
        {
            found = Some(Match {
                score: weighted,
                reason: Reason::SimilarCompanyName,
            });
        }
    }
    found.filter(|m| m.score >= REPORT_THRESHOLD)
}

#[cfg(test)]
mod unit {
    use super::*;

    fn person<'a>(first: &'a str, last: &'a str) -> Person<'a> {
        Person {
            first_name: first,
            last_name: last,
            ..Person::default()
        }
    }

    #[test]
    fn the_same_email_is_the_same_person() {
        let a = Person {
            email: Some("Ana.Lima@Acme.test"),
            ..person("Ana", "Lima")
        };
        let b = Person {
            email: Some(" ana.lima@acme.test "),
            ..person("A.", "Lima-Souza")
        };
        assert_eq!(
            score(&a, &b),
            Some(Match {
                score: 1.0,
                reason: Reason::SameEmail
            })
        );
    }

    #[test]
    fn phones_match_on_their_digits() {
        let a = Person {
            phone: Some("+1 (555) 010-0200"),
            ..person("Ben", "Okafor")
        };
        let b = Person {
            phone: Some("555.010.0200"),
            ..person("Benjamin", "Okafor")
        };
        assert_eq!(score(&a, &b).map(|m| m.reason), Some(Reason::SamePhone));
        let c = Person {
            phone: Some("555 010 0201"),
            ..person("Ben", "Okafor")
        };
        assert_eq!(score(&a, &c), None, "one digit off is another number");
        assert_eq!(
            phone_digits("+49 30 1234567").as_deref(),
            Some("49301234567")
        );
        assert_eq!(phone_digits("ext 12"), None);
        // Short numbers only match whole; an extension alone is no number.
        assert!(same_phone("12-34", "1234"));
        assert_eq!(phone_digits("x1234"), None);
        assert!(!same_phone("1234", "51234"));
    }

    #[test]
    fn near_identical_names_in_the_same_organization() {
        let org = Some("org-1");
        for (a, b) in [
            (("Jon", "Smith"), ("John", "Smith")),
            (("Katherine", "Johnson"), ("Catherine", "Johnson")),
            (("José", "Álvarez"), ("Jose", "Alvarez")),
            (("Smith", "John"), ("John", "Smith")),
            (("Anne-Marie", "Dubois"), ("Anne Marie", "Dubois")),
        ] {
            let pa = Person {
                organization_id: org,
                ..person(a.0, a.1)
            };
            let pb = Person {
                organization_id: org,
                ..person(b.0, b.1)
            };
            let m = score(&pa, &pb).unwrap_or_else(|| panic!("{a:?} ~ {b:?}"));
            assert_eq!(m.reason, Reason::SimilarNameSameOrganization, "{a:?} {b:?}");
            assert!(m.score >= REPORT_THRESHOLD && m.score <= WEIGHT_NAME_SAME_ORGANIZATION);
        }
    }

    #[test]
    fn different_people_with_alike_names_are_not_duplicates() {
        let org = Some("org-1");
        for (a, b) in [
            (("John", "Smith"), ("Jane", "Smith")),
            (("Maria", "Garcia"), ("Mario", "Garcia Lopez")),
            (("Li", "Wang"), ("Lu", "Wang")),
            (("Mike", "Brown"), ("Mila", "Brown")),
        ] {
            let pa = Person {
                organization_id: org,
                ..person(a.0, a.1)
            };
            let pb = Person {
                organization_id: org,
                ..person(b.0, b.1)
            };
            assert_eq!(
                score(&pa, &pb),
                None,
                "{a:?} vs {b:?}: {}",
                name_similarity(&pa, &pb)
            );
        }
    }

    #[test]
    fn a_similar_name_alone_is_not_enough() {
        // Same name, but nothing ties them together: two people called John Smith.
        let a = Person {
            organization_id: Some("org-1"),
            ..person("John", "Smith")
        };
        let b = Person {
            organization_id: Some("org-2"),
            ..person("John", "Smith")
        };
        assert_eq!(score(&a, &b), None);
        let c = person("John", "Smith");
        assert_eq!(score(&c, &c.clone()), None);
    }

    #[test]
    fn a_company_email_domain_ties_names_together_a_free_mail_domain_does_not() {
        let a = Person {
            email: Some("jsmith@globex.test"),
            ..person("John", "Smith")
        };
        let b = Person {
            email: Some("john.smith@globex.test"),
            ..person("Jon", "Smith")
        };
        let m = score(&a, &b).expect("same company domain");
        assert_eq!(m.reason, Reason::SimilarNameSameEmailDomain);
        let c = Person {
            email: Some("jsmith@gmail.com"),
            ..person("John", "Smith")
        };
        let d = Person {
            email: Some("john.smith1@gmail.com"),
            ..person("John", "Smith")
        };
        assert_eq!(score(&c, &d), None);
        assert_eq!(company_domain("x@GMAIL.com"), None);
        assert_eq!(
            company_domain("x@Globex.test").as_deref(),
            Some("globex.test")
        );
    }

    #[test]
    fn the_strongest_reason_wins() {
        let a = Person {
            email: Some("a@acme.test"),
            phone: Some("5550100200"),
            organization_id: Some("o"),
            ..person("Ana", "Lima")
        };
        let b = Person {
            email: Some("A@acme.test"),
            ..a.clone()
        };
        assert_eq!(score(&a, &b).map(|m| m.reason), Some(Reason::SameEmail));
        let c = Person {
            email: Some("other@acme.test"),
            ..a.clone()
        };
        assert_eq!(score(&a, &c).map(|m| m.reason), Some(Reason::SamePhone));
        let weights = [
            WEIGHT_SAME_EMAIL,
            WEIGHT_SAME_PHONE,
            WEIGHT_NAME_SAME_ORGANIZATION,
            WEIGHT_NAME_SAME_DOMAIN,
        ];
        assert!(
            weights.windows(2).all(|w| w[0] > w[1])
                && REPORT_THRESHOLD < WEIGHT_NAME_SAME_DOMAIN * NAME_SIMILARITY + 0.01
        );
    }

    #[test]
    fn empty_names_never_match_by_name() {
        let a = Person {
            organization_id: Some("o"),
            ..person("", "")
        };
        assert_eq!(name_similarity(&a, &a), 0.0);
        assert_eq!(score(&a, &a.clone()), None);
    }

    #[test]
    fn phone_extensions_are_not_part_of_the_number() {
        assert_eq!(
            phone_digits("+1 (555) 010-0200 x12").as_deref(),
            Some("15550100200")
        );
        assert_eq!(
            phone_digits("555-010-0200 ext. 7").as_deref(),
            Some("5550100200")
        );
        assert_eq!(
            phone_digits("555 010 0200 ext 7").as_deref(),
            Some("5550100200")
        );
        assert_eq!(phone_digits("555 010 0200").as_deref(), Some("5550100200"));
    }

    #[test]
    fn companies_match_on_their_website_or_their_name_without_legal_form() {
        let acme = Company {
            name: "Acme Corp.",
            website_domain: Some("acme.com"),
        };
        let same_site = Company {
            name: "ACME Holdings",
            website_domain: Some("www.acme.com"),
        };
        assert_eq!(
            score_company(&acme, &same_site).map(|m| m.reason),
            Some(Reason::SameWebsite)
        );
        let same_name = Company {
            name: "ACME, Inc.",
            website_domain: None,
        };
        let m = score_company(&acme, &same_name).expect("a duplicate");
        assert_eq!(m.reason, Reason::SimilarCompanyName);
        assert!((m.score - WEIGHT_SIMILAR_COMPANY_NAME).abs() < 1e-9);
        let typo = Company {
            name: "Acme Corporation",
            website_domain: None,
        };
        assert!(score_company(&same_name, &typo).is_some());
        for other in ["Acne Labs", "Apex Corp", "Globex Corporation"] {
            let b = Company {
                name: other,
                website_domain: Some("example.org"),
            };
            assert_eq!(score_company(&acme, &b), None, "{other}");
        }
    }
}
