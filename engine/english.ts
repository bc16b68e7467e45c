/**
 * Small helpers for the English of error messages.
 *
 * @module
 */

/** Words that start with a vowel letter but a consonant sound ("a unique", "a one-off"). */
const CONSONANT_SOUND = /^(uni|use|usu|uti|ura|ure|uint|one|once|eu)/i;
/** Words that start with a consonant letter but a vowel sound ("an hour"). */
const VOWEL_SOUND = /^(hour|honest|honou?r|heir)/i;

/**
 * The word with "a" or "an" before it, as English says it: "an undefined",
 * "an Error", "a Map", "a Uint8Array".
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { withArticle } from "./english.ts";
 * assert.equal(withArticle("undefined"), "an undefined");
 * assert.equal(withArticle("function"), "a function");
 * assert.equal(withArticle("Uint8Array"), "a Uint8Array");
 * ```
 */
export function withArticle(word: string): string {
  const an = VOWEL_SOUND.test(word) || (/^[aeiou]/i.test(word) && !CONSONANT_SOUND.test(word));
  return `${an ? "an" : "a"} ${word}`;
}
