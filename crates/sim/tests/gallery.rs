//! The gallery's staged stories (`chorus sim --scenario NAME`): each sets its stage on several
//! seeds, passes every checker, keeps its visual trace, and ends as its lesson says (the
//! primary-backup dead ends stuck, the others live). The lessons themselves are proven by the
//! scenario tests each story names; these keep the pictures in docs/gallery/ drawable.

use chorus_sim::gallery::Scenario;

#[test]
fn every_story_sets_its_stage_and_passes_every_checker() {
    for scenario in Scenario::ALL {
        assert_eq!(Scenario::named(scenario.name()), Some(scenario));
        for seed in 1..=3 {
            let report = scenario
                .run(seed)
                .unwrap_or_else(|error| panic!("{} seed {seed}: {error}", scenario.name()));
            assert!(
                report.passed() && report.linearizable(),
                "{} seed {seed}: {:?}",
                scenario.name(),
                report.violations
            );
            let stuck = matches!(scenario, Scenario::PbViewServiceDown | Scenario::PbStuck);
            assert_eq!(report.stuck, stuck, "{} seed {seed}", scenario.name());
            let trace = report.visual.expect("a story keeps its visual trace");
            assert!(trace.message_count() > 0, "{} seed {seed}", scenario.name());
        }
    }
}
