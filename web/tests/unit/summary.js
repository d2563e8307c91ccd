/** A Vitest reporter that ends the run with one plain line: "vitest: N passed, N failed, N skipped". */
export default class PlainSummary {
  onTestRunEnd(testModules) {
    const counts = { passed: 0, failed: 0, skipped: 0 }
    for (const module of testModules) {
      for (const test of module.children.allTests()) {
        const state = test.result().state
        counts[state in counts ? state : 'skipped'] += 1
      }
    }
    process.stdout.write(
      `vitest: ${counts.passed} passed, ${counts.failed} failed, ${counts.skipped} skipped\n`,
    )
  }
}
