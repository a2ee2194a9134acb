//! Currency codes a deal's amount may be in (ISO 4217).
//!
//! A deal stores its amount and the code of its currency, and reports add amounts up per
//! currency, so the code must name a real, current currency: a typo like `EUD` would
//! otherwise start a currency of its own in every pipeline total. The list is ISO 4217's
//! active alphabetic codes without the ones that are not money a deal is paid in: fund and
//! accounting units (BOV, CHE, CLF, XDR, XSU, XUA ...), precious metals (XAU, XAG, XPT,
//! XPD), bond units (XBA to XBD) and the testing and "no currency" codes XTS and XXX.
//! Codes ISO has withdrawn are not known: ANG (replaced by XCG in 2025), BGN (Bulgaria
//! adopted the euro in 2026), HRK, SLL (replaced by SLE), ZWL (replaced by ZWG) and the
//! like; a deal in one of them cannot be paid today.

/// Sorted, for [`is_known`]'s binary search.
const CODES: [&str; 156] = [
    "AED", "AFN", "ALL", "AMD", "AOA", "ARS", "AUD", "AWG", "AZN", "BAM", "BBD", "BDT", "BHD",
    "BIF", "BMD", "BND", "BOB", "BRL", "BSD", "BTN", "BWP", "BYN", "BZD", "CAD", "CDF", "CHF",
    "CLP", "CNY", "COP", "CRC", "CUC", "CUP", "CVE", "CZK", "DJF", "DKK", "DOP", "DZD", "EGP",
    "ERN", "ETB", "EUR", "FJD", "FKP", "GBP", "GEL", "GHS", "GIP", "GMD", "GNF", "GTQ", "GYD",
    "HKD", "HNL", "HTG", "HUF", "IDR", "ILS", "INR", "IQD", "IRR", "ISK", "JMD", "JOD", "JPY",
    "KES", "KGS", "KHR", "KMF", "KPW", "KRW", "KWD", "KYD", "KZT", "LAK", "LBP", "LKR", "LRD",
    "LSL", "LYD", "MAD", "MDL", "MGA", "MKD", "MMK", "MNT", "MOP", "MRU", "MUR", "MVR", "MWK",
    "MXN", "MYR", "MZN", "NAD", "NGN", "NIO", "NOK", "NPR", "NZD", "OMR", "PAB", "PEN", "PGK",
    "PHP", "PKR", "PLN", "PYG", "QAR", "RON", "RSD", "RUB", "RWF", "SAR", "SBD", "SCR", "SDG",
    "SEK", "SGD", "SHP", "SLE", "SOS", "SRD", "SSP", "STN", "SVC", "SYP", "SZL", "THB", "TJS",
    "TMT", "TND", "TOP", "TRY", "TTD", "TWD", "TZS", "UAH", "UGX", "USD", "UYU", "UZS", "VED",
    "VES", "VND", "VUV", "WST", "XAF", "XCD", "XCG", "XOF", "XPF", "YER", "ZAR", "ZMW", "ZWG",
];

/// Whether `code` is an active ISO 4217 currency code, as written: `usd` is not (callers
/// that accept any case uppercase first).
pub fn is_known(code: &str) -> bool {
    CODES.binary_search(&code).is_ok()
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn everyday_currencies_are_known() {
        for code in [
            "USD", "EUR", "GBP", "JPY", "CHF", "CAD", "AUD", "CNY", "INR", "BRL", "MXN", "SEK",
            "NOK", "DKK", "PLN", "CZK", "HUF", "ZAR", "NZD", "SGD", "HKD", "KRW", "TRY", "ILS",
            "AED", "SAR", "XOF", "XAF", "XCD", "XPF", "XCG", "ZWG", "SLE", "VES",
        ] {
            assert!(is_known(code), "{code}");
        }
    }

    #[test]
    fn unknown_codes_are_refused() {
        for code in [
            "ABC", "XXX", "XTS", "XAU", "XAG", "XPT", "XPD", "XDR", "XSU", "XUA", "XBA", "XBD",
            "BOV", "CHE", "USN", "DEM", "FRF", "HRK", "ZWL", "ANG", "usd", "Usd", "US", "USDD", "",
            " USD", "USD ", "U$D",
        ] {
            assert!(!is_known(code), "{code:?}");
        }
    }

    #[test]
    fn the_list_is_sorted_and_well_formed() {
        assert!(
            CODES.windows(2).all(|w| w[0] < w[1]),
            "sorted and without duplicates"
        );
        for code in CODES {
            assert!(
                code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase()),
                "{code:?}"
            );
        }
    }
}
