//! GrowthBook-compatible assignment: the same hash, bucket ranges and variation choice as
//! GrowthBook's SDKs (`packages/sdk-js/src/util.ts`: `hash`, `getBucketRanges`,
//! `chooseVariation`), so that an application using a GrowthBook SDK with the same seed, the
//! user id as the hash attribute and the same weights and coverage computes the same variant
//! offline. Checked against the SDK's published cases (`packages/sdk-js/test/cases.json`) in
//! this module's tests. Pure arithmetic: the same f64 operations as the JavaScript, in the
//! same order, so that bucket boundaries fall exactly where the SDK puts them.

/// 32-bit FNV-1a over UTF-16 code units, like the SDK's `hashFnv32a` (`charCodeAt`): for the
/// ASCII ids Nova hashes this is plain FNV-1a over bytes.
pub fn fnv1a32(s: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for unit in s.encode_utf16() {
        h ^= u32::from(unit);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// The SDK's `hash(seed, value, version)`: a number in [0, 1). Version 2 (the unbiased one,
/// 10,000 buckets) hashes the decimal text of the first hash again; version 1 is the original
/// biased one (1,000 buckets). `None` for an unknown version.
pub fn hash(seed: &str, value: &str, version: u32) -> Option<f64> {
    match version {
        2 => {
            let inner = fnv1a32(&format!("{seed}{value}"));
            Some(f64::from(fnv1a32(&inner.to_string()) % 10_000) / 10_000.0)
        }
        1 => Some(f64::from(fnv1a32(&format!("{value}{seed}")) % 1_000) / 1_000.0),
        _ => None,
    }
}

/// The SDK's `getEqualWeights(n)`.
pub fn equal_weights(n: usize) -> Vec<f64> {
    if n == 0 {
        return Vec::new();
    }
    vec![1.0 / n as f64; n]
}

/// The SDK's `getBucketRanges(numVariations, coverage, weights)`: one `[start, end)` per
/// variation, from the cumulative weights (fractions summing to 1), each range shortened to
/// `coverage` of its weight. Coverage is clamped to [0, 1]; weights of the wrong length or not
/// summing to 1 (±0.01) fall back to equal weights, as in the SDK.
pub fn bucket_ranges(n: usize, coverage: f64, weights: Option<&[f64]>) -> Vec<(f64, f64)> {
    let coverage = if coverage.is_nan() {
        1.0
    } else {
        coverage.clamp(0.0, 1.0)
    };
    let mut weights: Vec<f64> = weights.map_or_else(|| equal_weights(n), <[f64]>::to_vec);
    if weights.len() != n {
        weights = equal_weights(n);
    }
    let total: f64 = weights.iter().sum();
    if !(0.99..=1.01).contains(&total) {
        weights = equal_weights(n);
    }
    let mut cumulative = 0.0;
    weights
        .into_iter()
        .map(|w| {
            let start = cumulative;
            cumulative += w;
            (start, start + coverage * w)
        })
        .collect()
}

/// The SDK's `chooseVariation(n, ranges)`: the first range with `start <= n < end`; `None`
/// (the SDK's -1) when `n` falls outside every range (outside coverage).
pub fn choose_variation(n: f64, ranges: &[(f64, f64)]) -> Option<usize> {
    ranges
        .iter()
        .position(|&(start, end)| n >= start && n < end)
}

#[cfg(test)]
mod tests {
    //! Cases copied from GrowthBook's SDK test suite, `packages/sdk-js/test/cases.json`
    //! (growthbook/growthbook, spec version 0.5.x), sections `hash`, `getBucketRange` and
    //! `chooseVariation`, plus the bucket of the `feature` case "creates experiments properly".

    use super::*;

    #[test]
    fn hash_matches_growthbook_cases() {
        // [seed, value, version, expected]
        let cases: &[(&str, &str, u32, Option<f64>)] = &[
            ("", "a", 1, Some(0.22)),
            ("", "b", 1, Some(0.077)),
            ("b", "a", 1, Some(0.946)),
            ("ef", "d", 1, Some(0.652)),
            ("asdf", "8952klfjas09ujk", 1, Some(0.549)),
            ("", "123", 1, Some(0.011)),
            ("", "___)((*\":&", 1, Some(0.563)),
            ("seed", "a", 2, Some(0.0505)),
            ("seed", "b", 2, Some(0.2696)),
            ("foo", "ab", 2, Some(0.2575)),
            ("foo", "def", 2, Some(0.2019)),
            ("89123klj", "8952klfjas09ujkasdf", 2, Some(0.124)),
            ("90850943850283058242805", "123", 2, Some(0.7516)),
            ("()**(%$##$%#$#", "___)((*\":&", 2, Some(0.0128)),
            ("abc", "def", 99, None),
        ];
        for &(seed, value, version, expected) in cases {
            assert_eq!(
                hash(seed, value, version),
                expected,
                "hash({seed:?}, {value:?}, {version})"
            );
        }
        // `feature` case "creates experiments properly": seed "feature", id "123", v2.
        assert_eq!(hash("feature", "123", 2), Some(0.5231));
    }

    #[test]
    fn bucket_ranges_match_growthbook_cases() {
        // [name, (numVariations, coverage, weights), expected ranges]
        type Case<'a> = (&'a str, usize, f64, Option<&'a [f64]>, &'a [(f64, f64)]);
        let cases: &[Case] = &[
            ("normal 50/50", 2, 1.0, None, &[(0.0, 0.5), (0.5, 1.0)]),
            (
                "reduced coverage",
                2,
                0.5,
                None,
                &[(0.0, 0.25), (0.5, 0.75)],
            ),
            ("zero coverage", 2, 0.0, None, &[(0.0, 0.0), (0.5, 0.5)]),
            (
                "4 variations",
                4,
                1.0,
                None,
                &[(0.0, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 1.0)],
            ),
            (
                "uneven weights",
                2,
                1.0,
                Some(&[0.4, 0.6]),
                &[(0.0, 0.4), (0.4, 1.0)],
            ),
            (
                "uneven weights, 3 variations",
                3,
                1.0,
                Some(&[0.2, 0.3, 0.5]),
                &[(0.0, 0.2), (0.2, 0.5), (0.5, 1.0)],
            ),
            (
                "uneven weights, reduced coverage, 3 variations",
                3,
                0.2,
                Some(&[0.2, 0.3, 0.5]),
                &[(0.0, 0.04), (0.2, 0.26), (0.5, 0.6)],
            ),
            (
                "negative coverage",
                2,
                -0.2,
                None,
                &[(0.0, 0.0), (0.5, 0.5)],
            ),
            ("coverage above 1", 2, 1.5, None, &[(0.0, 0.5), (0.5, 1.0)]),
            (
                "weights sum below 1",
                2,
                1.0,
                Some(&[0.4, 0.1]),
                &[(0.0, 0.5), (0.5, 1.0)],
            ),
            (
                "weights sum above 1",
                2,
                1.0,
                Some(&[0.7, 0.6]),
                &[(0.0, 0.5), (0.5, 1.0)],
            ),
            (
                "weights.length not equal to num variations",
                4,
                1.0,
                Some(&[0.4, 0.4, 0.2]),
                &[(0.0, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 1.0)],
            ),
            (
                "weights sum almost equals 1",
                2,
                1.0,
                Some(&[0.4, 0.5999]),
                &[(0.0, 0.4), (0.4, 0.9999)],
            ),
        ];
        for &(name, n, coverage, weights, expected) in cases {
            let got = bucket_ranges(n, coverage, weights);
            assert_eq!(got.len(), expected.len(), "{name}");
            for (g, e) in got.iter().zip(expected) {
                // The SDK's test rounds to 6 decimals before comparing.
                assert!(
                    (g.0 - e.0).abs() < 1e-6 && (g.1 - e.1).abs() < 1e-6,
                    "{name}: {got:?} != {expected:?}"
                );
            }
        }
    }

    #[test]
    fn choose_variation_matches_growthbook_cases() {
        let even = [(0.0, 0.5), (0.5, 1.0)];
        let reduced = [(0.0, 0.25), (0.5, 0.75)];
        let zero = [(0.0, 0.5), (0.5, 0.5), (0.5, 1.0)];
        // [name, n, ranges, expected (-1 = None)]
        type Case<'a> = (&'a str, f64, &'a [(f64, f64)], Option<usize>);
        let cases: &[Case] = &[
            ("even range, 0.2", 0.2, &even, Some(0)),
            ("even range, 0.4", 0.4, &even, Some(0)),
            ("even range, 0.6", 0.6, &even, Some(1)),
            ("even range, 0.8", 0.8, &even, Some(1)),
            ("even range, 0", 0.0, &even, Some(0)),
            ("even range, 0.5", 0.5, &even, Some(1)),
            ("reduced range, 0.2", 0.2, &reduced, Some(0)),
            ("reduced range, 0.4", 0.4, &reduced, None),
            ("reduced range, 0.6", 0.6, &reduced, Some(1)),
            ("reduced range, 0.8", 0.8, &reduced, None),
            ("reduced range, 0.25", 0.25, &reduced, None),
            ("reduced range, 0.5", 0.5, &reduced, Some(1)),
            ("zero range", 0.5, &zero, Some(2)),
        ];
        for &(name, n, ranges, expected) in cases {
            assert_eq!(choose_variation(n, ranges), expected, "{name}");
        }
    }

    /// `feature` case "creates experiments properly": weights [0.1, 0.9], coverage 0.99, the
    /// bucket 0.5231 of id "123" under seed "feature" → variation 1.
    #[test]
    fn hash_and_ranges_compose_like_the_sdk() {
        let n = hash("feature", "123", 2).unwrap();
        let ranges = bucket_ranges(2, 0.99, Some(&[0.1, 0.9]));
        assert_eq!(choose_variation(n, &ranges), Some(1));
    }
}
