//! Search: blind-index tokens, FHIR date prefixes, last-updated, ids, sorting and paging.

use std::sync::Arc;

use carevault_domain::principal::TenantScope;
use carevault_domain::store::{CandidateFilter, CandidateQuery, ResourceWrite, SortBy, Store};
use carevault_fhir::{DateCondition, DatePrefix};

use crate::Raw;
use crate::fixtures::*;

conformance!(
    search_by_tokens,
    several_token_filters_match_their_intersection_whichever_is_smaller,
    a_token_and_a_date_filter_match_their_intersection_whichever_is_smaller,
    search_by_date_follows_fhir_prefixes,
    a_date_filter_and_sort_over_several_parameters_read_the_rows_of_each,
    search_by_last_updated_and_ids,
    search_sorts_and_pages,
);

async fn search_by_tokens(store: Arc<dyn Store>, _raw: &Raw) {
    let (_, scope) = new_tenant(&store, "tokens").await;
    let with = |id: &str, tokens: &[u8]| {
        let mut write = create("Patient", id, T0);
        write.tokens = tokens.iter().map(|byte| token(*byte)).collect();
        write
    };
    store
        .commit(
            &scope,
            &[
                with("p1", &[1, 2]),
                with("p2", &[2, 3]),
                with("p3", &[3, 3]),
            ],
            &[],
        )
        .await
        .unwrap();
    let mut observation = create("Observation", "o1", T0);
    observation.tokens = vec![token(1)];
    store.commit(&scope, &[observation], &[]).await.unwrap();

    let any = |bytes: &[u8]| CandidateFilter::AnyToken(bytes.iter().map(|b| token(*b)).collect());
    assert_eq!(
        search_ids(&store, &scope, &query("Patient", vec![any(&[1])])).await,
        strings(&["p1"])
    );
    assert_eq!(
        sorted(search_ids(&store, &scope, &query("Patient", vec![any(&[1, 3])])).await),
        strings(&["p1", "p2", "p3"])
    );
    // Every filter must match.
    assert_eq!(
        search_ids(
            &store,
            &scope,
            &query("Patient", vec![any(&[2]), any(&[3])])
        )
        .await,
        strings(&["p2"])
    );
    assert!(
        search_ids(&store, &scope, &query("Patient", vec![any(&[9])]))
            .await
            .is_empty()
    );
    assert!(
        search_ids(&store, &scope, &query("Patient", vec![any(&[])]))
            .await
            .is_empty()
    );
    assert_eq!(
        search_ids(&store, &scope, &query("Observation", vec![any(&[1])])).await,
        strings(&["o1"])
    );

    // An update replaces the resource's tokens.
    let mut changed = update("Patient", "p1", 2, T0 + 1);
    changed.tokens = vec![token(4)];
    store.commit(&scope, &[changed], &[]).await.unwrap();
    assert!(
        search_ids(&store, &scope, &query("Patient", vec![any(&[1])]))
            .await
            .is_empty()
    );
    assert_eq!(
        search_ids(&store, &scope, &query("Patient", vec![any(&[4])])).await,
        strings(&["p1"])
    );
    let found = store
        .search(&scope, &query("Patient", vec![any(&[4])]))
        .await
        .unwrap();
    assert_eq!(found[0].version.version, 2);
    assert_eq!(found[0].sort_value, T0 + 1);
}

/// A range longer than this (366 days in ms) is a long one to the store.
const LONG: i64 = 31_622_400_000;

async fn search_by_date_follows_fhir_prefixes(store: Arc<dyn Store>, _raw: &Raw) {
    let (_, scope) = new_tenant(&store, "dates").await;
    // Resource ranges around the query ranges below, including ones touching their edges.
    let ranges: Vec<(i64, i64)> = vec![
        (0, 10),
        (10, 20),
        (15, 18),
        (5, 25),
        (20, 30),
        (25, 26),
        (30, 40),
        (0, 100),
        (19, 21),
        (10, 11),
        // Longer than a year (the store indexes their ends apart): open ends, and a closed
        // range ending within and beyond the query ranges.
        (15, i64::MAX),
        (i64::MIN, 15),
        (i64::MIN, i64::MAX),
        (-LONG, 21),
        (20, LONG),
        (40, 41 + LONG),
    ];
    let mut writes = Vec::new();
    for (index, (low, high)) in ranges.iter().enumerate() {
        let mut write = create("Encounter", &format!("e{index}"), T0);
        write.dates = vec![date("date", *low, *high), date("other", 1000, 2000)];
        // Every resource holds both tokens: a filter on them counts twice as many rows as any
        // date filter, so the date filter drives that search (its ids as a set).
        write.tokens = vec![token(1), token(2)];
        writes.push(write);
    }
    // Two entries for one param: matches when either does.
    let mut two = create("Encounter", "two", T0);
    two.dates = vec![date("date", 0, 5), date("date", 50, 60)];
    two.tokens = vec![token(1), token(2)];
    writes.push(two);
    store.commit(&scope, &writes, &[]).await.unwrap();

    let entries = |id: &str| -> Vec<(i64, i64)> {
        if id == "two" {
            return vec![(0, 5), (50, 60)];
        }
        let index: usize = id[1..].parse().unwrap();
        vec![ranges[index]]
    };
    let all_ids: Vec<String> = (0..ranges.len())
        .map(|i| format!("e{i}"))
        .chain(["two".to_owned()])
        .collect();
    let prefixes = [
        DatePrefix::Eq,
        DatePrefix::Ne,
        DatePrefix::Lt,
        DatePrefix::Le,
        DatePrefix::Gt,
        DatePrefix::Ge,
        DatePrefix::Sa,
        DatePrefix::Eb,
    ];
    let both_tokens = CandidateFilter::AnyToken(vec![token(1), token(2)]);
    let query_ranges = [
        (10, 20),
        (0, 100),
        (20, 21),
        (55, 56),
        (LONG, LONG + 1),
        (-LONG - 1, -LONG),
        (i64::MIN, 0),
        (100, i64::MAX),
    ];
    for prefix in prefixes {
        for (low, high) in query_ranges {
            let condition = DateCondition { prefix, low, high };
            let expected: Vec<String> = all_ids
                .iter()
                .filter(|id| entries(id).iter().any(|(l, h)| condition.matches(*l, *h)))
                .cloned()
                .collect();
            let filter = CandidateFilter::AnyDate {
                params: vec!["date".to_owned()],
                conditions: vec![condition],
            };
            // Alone, the filter probes each candidate's rows; beside the larger token filter,
            // it drives, as a set of ids.
            let alone = query("Encounter", vec![filter.clone()]);
            let driving = query("Encounter", vec![both_tokens.clone(), filter]);
            for (form, query) in [("probe", alone), ("set", driving)] {
                let found = sorted(search_ids(&store, &scope, &query).await);
                assert_eq!(
                    found,
                    sorted(expected.clone()),
                    "{prefix:?} [{low}, {high}) as a {form}"
                );
            }
        }
    }
    // Several conditions: any may match.
    let either = CandidateFilter::AnyDate {
        params: vec!["date".to_owned()],
        conditions: vec![
            DateCondition {
                prefix: DatePrefix::Eq,
                low: 30,
                high: 40,
            },
            DateCondition {
                prefix: DatePrefix::Eq,
                low: 25,
                high: 26,
            },
        ],
    };
    assert_eq!(
        sorted(search_ids(&store, &scope, &query("Encounter", vec![either])).await),
        strings(&["e5", "e6"])
    );
    // The param must match too.
    let other = CandidateFilter::AnyDate {
        params: vec!["other".to_owned()],
        conditions: vec![DateCondition {
            prefix: DatePrefix::Eq,
            low: 10,
            high: 20,
        }],
    };
    assert!(
        search_ids(&store, &scope, &query("Encounter", vec![other]))
            .await
            .is_empty()
    );
    let none = CandidateFilter::AnyDate {
        params: vec!["date".to_owned()],
        conditions: vec![],
    };
    assert!(
        search_ids(&store, &scope, &query("Encounter", vec![none]))
            .await
            .is_empty()
    );
}

/// A date filter or sort over a parameter and those it includes (a Condition's `date`, its
/// `onset-date` and `recorded-date`) reads the rows of each, and of no other parameter: alone
/// (a probe of each candidate), driving (a set of ids) and probed inside a token's set.
async fn a_date_filter_and_sort_over_several_parameters_read_the_rows_of_each(
    store: Arc<dyn Store>,
    _raw: &Raw,
) {
    let (_, scope) = new_tenant(&store, "included dates").await;
    let rows = [
        ("onset", vec![date("onset-date", 30, 31)]),
        ("recorded", vec![date("recorded-date", 10, 11)]),
        (
            "both",
            vec![date("onset-date", 50, 51), date("recorded-date", 20, 21)],
        ),
        // As a file written before `date` included the others holds it.
        (
            "written-before",
            vec![date("date", 40, 41), date("onset-date", 40, 41)],
        ),
        ("other", vec![date("abatement-date", 10, 60)]),
    ];
    let writes: Vec<ResourceWrite> = rows
        .iter()
        .map(|(id, dates)| {
            let mut write = create("Condition", id, T0);
            write.dates = dates.clone();
            // Tokens 1 and 2 on every resource (more rows than any date filter here matches,
            // so the date filter drives beside them); token 3 on two (fewer, so it drives).
            write.tokens = vec![token(1), token(2)];
            if matches!(*id, "onset" | "both") {
                write.tokens.push(token(3));
            }
            write
        })
        .collect();
    store.commit(&scope, &writes, &[]).await.unwrap();
    let params = strings(&["date", "onset-date", "recorded-date"]);
    let within = |low: i64, high: i64| CandidateFilter::AnyDate {
        params: params.clone(),
        conditions: vec![DateCondition {
            prefix: DatePrefix::Eq,
            low,
            high,
        }],
    };
    for ((low, high), expected) in [
        (
            (0, 100),
            vec!["both", "onset", "recorded", "written-before"],
        ),
        ((15, 35), vec!["both", "onset"]),
        ((35, 45), vec!["written-before"]),
        ((60, 70), vec![]),
    ] {
        let filter = within(low, high);
        let forms = [
            ("alone", vec![filter.clone()], expected.clone()),
            (
                "driving",
                vec![
                    CandidateFilter::AnyToken(vec![token(1), token(2)]),
                    filter.clone(),
                ],
                expected.clone(),
            ),
            (
                "probed",
                vec![CandidateFilter::AnyToken(vec![token(3)]), filter],
                expected
                    .iter()
                    .copied()
                    .filter(|id| matches!(*id, "onset" | "both"))
                    .collect(),
            ),
        ];
        for (form, filters, want) in forms {
            let found = sorted(search_ids(&store, &scope, &query("Condition", filters)).await);
            assert_eq!(found, strings(&want), "[{low}, {high}) {form}");
        }
    }
    let by_date = CandidateQuery {
        sort: SortBy::Date(params.clone()),
        ..query("Condition", vec![])
    };
    assert_eq!(
        search_pairs(&store, &scope, &by_date).await,
        pairs(&[
            (10, "recorded"),
            (20, "both"),
            (30, "onset"),
            (40, "written-before"),
            (i64::MAX, "other")
        ])
    );
}

async fn search_by_last_updated_and_ids(store: Arc<dyn Store>, _raw: &Raw) {
    let (_, scope) = new_tenant(&store, "updated").await;
    let times = [100, 200, 300, 400];
    let writes: Vec<ResourceWrite> = times
        .iter()
        .enumerate()
        .map(|(i, t)| create("Patient", &format!("p{i}"), *t))
        .collect();
    store.commit(&scope, &writes, &[]).await.unwrap();

    let prefixes = [
        DatePrefix::Eq,
        DatePrefix::Ne,
        DatePrefix::Lt,
        DatePrefix::Le,
        DatePrefix::Gt,
        DatePrefix::Ge,
        DatePrefix::Sa,
        DatePrefix::Eb,
    ];
    for prefix in prefixes {
        for (low, high) in [(200, 201), (150, 350), (300, 1000), (0, 100)] {
            let condition = DateCondition { prefix, low, high };
            let expected: Vec<String> = times
                .iter()
                .enumerate()
                .filter(|(_, t)| condition.matches(**t, **t + 1))
                .map(|(i, _)| format!("p{i}"))
                .collect();
            let filter = CandidateFilter::LastUpdated(vec![condition]);
            assert_eq!(
                search_ids(&store, &scope, &query("Patient", vec![filter])).await,
                expected,
                "{prefix:?} [{low}, {high})"
            );
        }
    }

    let ids = CandidateFilter::Ids(strings(&["p3", "p1", "nope"]));
    assert_eq!(
        search_ids(&store, &scope, &query("Patient", vec![ids.clone()])).await,
        strings(&["p1", "p3"])
    );
    let recent = CandidateFilter::LastUpdated(vec![DateCondition {
        prefix: DatePrefix::Ge,
        low: 250,
        high: 251,
    }]);
    assert_eq!(
        search_ids(&store, &scope, &query("Patient", vec![ids, recent])).await,
        strings(&["p3"])
    );
    assert!(
        search_ids(
            &store,
            &scope,
            &query("Patient", vec![CandidateFilter::Ids(vec![])])
        )
        .await
        .is_empty()
    );
}

async fn search_sorts_and_pages(store: Arc<dyn Store>, _raw: &Raw) {
    let (_, scope) = new_tenant(&store, "sorting").await;
    // (id, last updated, birthdate lows): equal sort values are ordered by id.
    let rows: Vec<(&str, i64, Vec<i64>)> = vec![
        ("a", 300, vec![50]),
        ("b", 100, vec![70, 10]),
        ("c", 200, vec![]),
        ("d", 100, vec![50]),
        ("e", 400, vec![]),
        ("f", 200, vec![90]),
    ];
    let writes: Vec<ResourceWrite> = rows
        .iter()
        .map(|(id, updated, lows)| {
            let mut write = create("Patient", id, *updated);
            write.dates = lows
                .iter()
                .map(|low| date("birthdate", *low, low + 1))
                .collect();
            write.dates.push(date("death", 0, 1));
            write
        })
        .collect();
    store.commit(&scope, &writes, &[]).await.unwrap();

    let by_updated = query("Patient", vec![]);
    assert_eq!(
        search_pairs(&store, &scope, &by_updated).await,
        pairs(&[
            (100, "b"),
            (100, "d"),
            (200, "c"),
            (200, "f"),
            (300, "a"),
            (400, "e")
        ])
    );

    let descending = CandidateQuery {
        descending: true,
        ..by_updated.clone()
    };
    assert_eq!(
        search_ids(&store, &scope, &descending).await,
        strings(&["e", "a", "f", "c", "d", "b"])
    );

    let by_birthdate = CandidateQuery {
        sort: SortBy::Date(vec!["birthdate".to_owned()]),
        ..by_updated.clone()
    };
    assert_eq!(
        search_pairs(&store, &scope, &by_birthdate).await,
        pairs(&[
            (10, "b"),
            (50, "a"),
            (50, "d"),
            (90, "f"),
            (i64::MAX, "c"),
            (i64::MAX, "e")
        ])
    );

    // Keyset paging, both directions, both sorts, page sizes 1 to 4: same order as unpaged.
    for base in [by_updated.clone(), by_birthdate.clone()] {
        for descending in [false, true] {
            let whole = CandidateQuery {
                descending,
                ..base.clone()
            };
            let expected = search_ids(&store, &scope, &whole).await;
            for limit in 1..=4 {
                let mut after = None;
                let mut paged = Vec::new();
                loop {
                    let page = store
                        .search(
                            &scope,
                            &CandidateQuery {
                                after: after.clone(),
                                limit,
                                ..whole.clone()
                            },
                        )
                        .await
                        .unwrap();
                    if page.is_empty() {
                        break;
                    }
                    assert!(page.len() <= limit);
                    let last = page.last().unwrap();
                    after = Some((last.sort_value, last.version.id.clone()));
                    paged.extend(page.into_iter().map(|c| c.version.id));
                }
                assert_eq!(
                    paged, expected,
                    "{:?} descending={descending} limit={limit}",
                    base.sort
                );
            }
        }
    }
    let limited = CandidateQuery {
        limit: 2,
        ..by_updated.clone()
    };
    assert_eq!(
        search_ids(&store, &scope, &limited).await,
        strings(&["b", "d"])
    );
    assert!(
        search_ids(
            &store,
            &scope,
            &CandidateQuery {
                limit: 0,
                ..by_updated
            }
        )
        .await
        .is_empty()
    );
}

/// Two or more token filters: the store drives from the filter with the fewest rows and probes
/// the others. The answer is the same intersection whichever filter is the small one, in
/// whichever order the filters come, with a filter of several tokens, and across pages.
async fn several_token_filters_match_their_intersection_whichever_is_smaller(
    store: Arc<dyn Store>,
    _raw: &Raw,
) {
    let (_, scope) = new_tenant(&store, "intersection").await;
    // Token 1 on every patient (common), token 2 on every tenth (rare), token 3 on every
    // fourth, token 4 on patient 7 only.
    let writes: Vec<ResourceWrite> = (0..1_500)
        .map(|index: usize| {
            let mut write = create("Patient", &format!("p{index:04}"), T0 + index as i64);
            write.tokens.push(token(1));
            if index.is_multiple_of(10) {
                write.tokens.push(token(2));
            }
            if index.is_multiple_of(4) {
                write.tokens.push(token(3));
            }
            if index == 7 {
                write.tokens.push(token(4));
            }
            write
        })
        .collect();
    store.commit(&scope, &writes, &[]).await.unwrap();
    let any = |bytes: &[u8]| CandidateFilter::AnyToken(bytes.iter().map(|b| token(*b)).collect());
    let expected = |keep: &dyn Fn(usize) -> bool| patient_ids(1_500, keep);
    let all_pages = |filters| every_page(&store, &scope, filters, 40);
    let common_and_rare = expected(&|index| index % 10 == 0);
    assert_eq!(all_pages(vec![any(&[1]), any(&[2])]).await, common_and_rare);
    assert_eq!(all_pages(vec![any(&[2]), any(&[1])]).await, common_and_rare);
    let rare_and_quarter = expected(&|index| index % 20 == 0);
    assert_eq!(
        all_pages(vec![any(&[3]), any(&[2])]).await,
        rare_and_quarter
    );
    assert_eq!(
        all_pages(vec![any(&[1]), any(&[3]), any(&[2])]).await,
        rare_and_quarter
    );
    // A filter of several tokens matches any of them.
    assert_eq!(
        all_pages(vec![any(&[2, 4]), any(&[1])]).await,
        expected(&|index| index % 10 == 0 || index == 7)
    );
    assert_eq!(
        all_pages(vec![any(&[1]), any(&[4])]).await,
        strings(&["p0007"])
    );
    assert!(all_pages(vec![any(&[1]), any(&[9])]).await.is_empty());
    assert!(all_pages(vec![any(&[4]), any(&[2])]).await.is_empty());

    // Another tenant whose rows carry the same token bytes, many of them for the rare token so
    // that its sizes would change the driver if they were counted: its resources never appear,
    // and this tenant's answer stays the same.
    let (_, other) = new_tenant(&store, "intersection, other tenant").await;
    let mut foreign: Vec<ResourceWrite> = (0..300)
        .map(|index: usize| {
            let mut write = create("Patient", &format!("x{index:04}"), T0);
            write.tokens = vec![token(1), token(2), token(4)];
            write
        })
        .collect();
    // And a resource with this tenant's id p0007 that carries the tokens this tenant's p0007
    // lacks: a probe of another filter must look at this tenant's rows of that id only.
    let mut same_id = create("Patient", "p0007", T0);
    same_id.tokens = vec![token(2), token(3)];
    foreign.push(same_id);
    store.commit(&other, &foreign, &[]).await.unwrap();
    assert!(all_pages(vec![any(&[4]), any(&[3])]).await.is_empty());
    assert_eq!(all_pages(vec![any(&[1]), any(&[2])]).await, common_and_rare);
    assert_eq!(
        all_pages(vec![any(&[2]), any(&[4])]).await,
        Vec::<String>::new()
    );
    assert_eq!(
        all_pages(vec![any(&[1]), any(&[4])]).await,
        strings(&["p0007"])
    );
}

/// A token filter and a date range (as in `Observation?code=…&date=…`): a search drives from
/// the date when it has fewer rows than the token, and from the token otherwise; the answer is
/// the intersection either way.
async fn a_token_and_a_date_filter_match_their_intersection_whichever_is_smaller(
    store: Arc<dyn Store>,
    _raw: &Raw,
) {
    let (_, scope) = new_tenant(&store, "token and date").await;
    // Token 1 on every resource (a common value), token 2 on every 300th (a rare one); dates
    // ("days") [10k, 10k + 10) for k = index % 50, so each day is shared by 30 resources.
    let day = |index: usize| (index % 50) as i64 * 10;
    let writes: Vec<ResourceWrite> = (0..1_500)
        .map(|index: usize| {
            let mut write = create("Patient", &format!("p{index:04}"), T0 + index as i64);
            write.tokens.push(token(1));
            if index.is_multiple_of(300) {
                write.tokens.push(token(2));
            }
            write
                .dates
                .push(date("birthdate", day(index), day(index) + 10));
            write
        })
        .collect();
    store.commit(&scope, &writes, &[]).await.unwrap();
    let born = |prefix: DatePrefix, low: i64, high: i64| CandidateFilter::AnyDate {
        params: vec!["birthdate".to_owned()],
        conditions: vec![DateCondition { prefix, low, high }],
    };
    let any = |byte: u8| CandidateFilter::AnyToken(vec![token(byte)]);
    let expected = |keep: &dyn Fn(usize) -> bool| patient_ids(1_500, keep);
    let all_pages = |filters| every_page(&store, &scope, filters, 7);
    // The day (30 rows) is smaller than the common token (1,500): the date drives.
    let on_day_20 = expected(&|index| day(index) == 20);
    assert_eq!(on_day_20.len(), 30);
    assert_eq!(
        all_pages(vec![any(1), born(DatePrefix::Eq, 20, 30)]).await,
        on_day_20
    );
    assert_eq!(
        all_pages(vec![born(DatePrefix::Eq, 20, 30), any(1)]).await,
        on_day_20
    );
    // The rare token (5 rows) is smaller than the day: the token drives.
    assert_eq!(
        all_pages(vec![born(DatePrefix::Eq, 0, 10), any(2)]).await,
        expected(&|index| index.is_multiple_of(300))
    );
    assert!(
        all_pages(vec![any(2), born(DatePrefix::Eq, 20, 30)])
            .await
            .is_empty()
    );
    // Both past the counting bound: a range of days and the common token.
    assert_eq!(
        all_pages(vec![born(DatePrefix::Lt, 100, 101), any(1)]).await,
        expected(&|index| day(index) < 100)
    );
    // Another tenant with the same token bytes and days on many rows: never in the answer, and
    // its rows do not change which filter drives.
    let (_, other) = new_tenant(&store, "token and date, other tenant").await;
    let mut foreign: Vec<ResourceWrite> = (0..300)
        .map(|index: usize| {
            let mut write = create("Patient", &format!("x{index:04}"), T0);
            write.tokens = vec![token(1), token(2)];
            write.dates.push(date("birthdate", 20, 30));
            write
        })
        .collect();
    // And a resource with this tenant's id p0000 (token 2, born on day 0 here) born on day 20:
    // the date probe of the token-driven search must look at this tenant's rows only.
    let mut same_id = create("Patient", "p0000", T0);
    same_id.dates.push(date("birthdate", 20, 30));
    foreign.push(same_id);
    store.commit(&other, &foreign, &[]).await.unwrap();
    assert_eq!(
        all_pages(vec![any(1), born(DatePrefix::Eq, 20, 30)]).await,
        on_day_20
    );
    assert!(
        all_pages(vec![any(2), born(DatePrefix::Eq, 20, 30)])
            .await
            .is_empty()
    );
}

/// The ids `p0000`, `p0001`, … below `count` that `keep` accepts, in order.
fn patient_ids(count: usize, keep: &dyn Fn(usize) -> bool) -> Vec<String> {
    (0..count)
        .filter(|index| keep(*index))
        .map(|index| format!("p{index:04}"))
        .collect()
}

/// Every page of a Patient search with `filters`, `limit` per page.
async fn every_page(
    store: &Arc<dyn Store>,
    scope: &TenantScope,
    filters: Vec<CandidateFilter>,
    limit: usize,
) -> Vec<String> {
    let mut query = query("Patient", filters);
    query.limit = limit;
    search_all_ids(store, scope, query).await
}
