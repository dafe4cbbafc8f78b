import assert from "node:assert/strict"
import { test } from "node:test"
import * as Scram from "../../../lib/internal/kafka/scram.ts"

// RFC 7677 section 3: the SCRAM-SHA-256 exchange for user "user", password "pencil".
const vector = {
  clientNonce: "rOprNGfwEbeRWgbNEkqO",
  clientFirst: "n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
  serverFirst: "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
  clientFinal: "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
  serverFinal: "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",
}

const run = () => {
  const first = Scram.clientFirst("user", vector.clientNonce)
  const serverFirst = Scram.parseServerFirst(vector.serverFirst, vector.clientNonce)
  if (Scram.isFailure(serverFirst)) throw new Error(serverFirst.reason)
  const final = Scram.clientFinal("sha256", "pencil", first.bare, vector.serverFirst, serverFirst)
  return { first, final }
}

test("SCRAM-SHA-256 computes RFC 7677's client messages and accepts its server signature", () => {
  const { first, final } = run()
  assert.equal(first.message, vector.clientFirst)
  assert.equal(final.message, vector.clientFinal)
  assert.equal(Scram.verifyServerFinal(vector.serverFinal, final.serverSignature), undefined)
})

test("SCRAM refuses a server signature that does not match, and a server error", () => {
  const { final } = run()
  const forged = Scram.verifyServerFinal("v=AAAATRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=", final.serverSignature)
  assert.ok(Scram.isFailure(forged))
  assert.match(forged.reason, /signature does not match/)
  const refused = Scram.verifyServerFinal("e=invalid-proof", final.serverSignature)
  assert.ok(Scram.isFailure(refused))
  assert.match(refused.reason, /invalid-proof/)
})

test("SCRAM refuses a server nonce that does not extend ours, and too few iterations", () => {
  const foreign = Scram.parseServerFirst("r=someoneelse,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096", vector.clientNonce)
  assert.ok(Scram.isFailure(foreign) && /nonce/.test(foreign.reason))
  const cheap = Scram.parseServerFirst(`r=${vector.clientNonce}xyz,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=1`, vector.clientNonce)
  assert.ok(Scram.isFailure(cheap) && /iterations/.test(cheap.reason))
})

test("SCRAM escapes = and , in the user name", () => {
  assert.equal(Scram.clientFirst("a=b,c", "n").message, "n,,n=a=3Db=2Cc,r=n")
})
