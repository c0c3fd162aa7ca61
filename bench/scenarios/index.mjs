// The scenario modules of `make bench`, in the order they run and appear in BENCHMARKS.md.
// To add a scenario: write bench/scenarios/<name>.mjs (see core.mjs and bench/README.md for the
// interface) and add one import and one entry here.
import core from "./core.mjs";
import python from "./python.mjs";
import tls from "./tls.mjs";
import fairness from "./fairness.mjs";
import scale from "./scale.mjs";
import resume from "./resume.mjs";

export default [core, python, tls, fairness, scale, resume];
