// Browser tests of the people pages in Debian's Chromium, driven by playwright-core.
// Run by crates/cli/tests/e2e/browser.rs with one JSON argument:
//   {"base": "http://localhost:PORT", "passkeyInvitation": URL, "totpInvitation": URL,
//    "patient": ID, "family": NAME, "screenshots": DIR}
// Exits non-zero (with the reason) when any check fails.
import { chromium } from "playwright-core";
import { createHmac } from "node:crypto";
import { mkdirSync } from "node:fs";

const args = JSON.parse(process.argv[2]);
const PASSWORD = "correct horse battery staple lighthouse";

function check(condition, message) {
  if (!condition) {
    throw new Error(message);
  }
}

function base32Decode(text) {
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
  let bits = 0;
  let value = 0;
  const out = [];
  for (const c of text.replace(/[=\s]/g, "").toUpperCase()) {
    value = (value << 5) | alphabet.indexOf(c);
    bits += 5;
    if (bits >= 8) {
      bits -= 8;
      out.push((value >>> bits) & 0xff);
    }
  }
  return Buffer.from(out);
}

// RFC 6238: HMAC-SHA1 over the 30-second step, dynamic truncation, 6 digits.
function totp(secret, step) {
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(step));
  const digest = createHmac("sha1", base32Decode(secret)).update(counter).digest();
  const offset = digest[19] & 0x0f;
  const number = (digest.readUInt32BE(offset) & 0x7fffffff) % 1000000;
  return String(number).padStart(6, "0");
}

const currentStep = () => Math.floor(Date.now() / 1000 / 30);

// The current step, once at least 8 seconds of it remain: a code computed now must still be
// inside the server's window (±1 step) when it arrives, even on a loaded machine.
async function settledStep() {
  const intoStep = (Date.now() / 1000) % 30;
  if (intoStep > 22) {
    await new Promise((resolve) => setTimeout(resolve, (30 - intoStep + 0.5) * 1000));
  }
  return currentStep();
}

async function newPage(browser, violations) {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.on("console", (message) => {
    if (/Content.Security.Policy|Refused to/i.test(message.text())) {
      violations.push(message.text());
    }
  });
  page.on("pageerror", (error) => violations.push(String(error)));
  return page;
}

async function acceptInvitation(page, link, name) {
  await page.goto(link);
  await page.getByLabel("Your name").fill(name);
  await page.getByLabel("Create a password").fill(PASSWORD);
  await page.getByRole("button", { name: "Create account" }).click();
  await page.waitForURL(/\/signin\?created=1$/);
}

async function signInWithPassword(page, email) {
  await page.goto(`${args.base}/signin`);
  await page.getByLabel("Email address").fill(email);
  await page.getByLabel("Password").fill(PASSWORD);
  await page.getByRole("button", { name: "Continue" }).click();
}

async function patientStatus(page) {
  const reply = await page.request.get(`${args.base}/fhir/Patient/${args.patient}`);
  const body = await reply.text();
  return { status: reply.status(), body };
}

async function signOut(page) {
  await page.getByRole("button", { name: "Sign out" }).click();
  await page.waitForURL(/\/signin$/);
}

async function passkeyFlow(browser, violations) {
  const page = await newPage(browser, violations);
  const cdp = await page.context().newCDPSession(page);
  await cdp.send("WebAuthn.enable");
  await cdp.send("WebAuthn.addVirtualAuthenticator", {
    options: {
      protocol: "ctap2",
      transport: "internal",
      hasResidentKey: true,
      hasUserVerification: true,
      isUserVerified: true,
    },
  });
  await acceptInvitation(page, args.passkeyInvitation, "Pat Passkey");
  await page.screenshot({ path: `${args.screenshots}/signin.png`, fullPage: true });
  await signInWithPassword(page, "passkey.browser@example.org");
  await page.waitForURL(/\/account\/enrol$/);
  await page.screenshot({ path: `${args.screenshots}/enrol.png`, fullPage: true });
  check((await patientStatus(page)).status === 401, "an enrolment session must reach no data");
  await page.getByLabel("Name for this passkey").fill("virtual authenticator");
  await page.getByRole("button", { name: "Register a passkey" }).click();
  await page.locator("#recovery-codes li").first().waitFor();
  check((await page.locator("#recovery-codes li").count()) === 10, "ten recovery codes are shown");
  await page.screenshot({ path: `${args.screenshots}/recovery-codes.png`, fullPage: true });
  await page.getByRole("link", { name: "I have saved my codes" }).click();
  await page.waitForURL(`${args.base}/`);
  await signOut(page);
  check((await patientStatus(page)).status === 401, "signed out means no data");

  await page.getByRole("button", { name: "Sign in with a passkey" }).click();
  await page.waitForURL(`${args.base}/`);
  await page.getByRole("heading", { name: "Start page" }).waitFor();
  const read = await patientStatus(page);
  check(read.status === 200, `a passkey sign-in reads the record (got ${read.status})`);
  await page.goto(`${args.base}/account`);
  check(await page.getByRole("cell", { name: "virtual authenticator", exact: true }).isVisible(), "the passkey is listed by name");
  await page.context().close();
  console.log("passkey: enrolled, signed in with the passkey alone, record readable");
}

async function totpFlow(browser, violations) {
  const page = await newPage(browser, violations);
  await acceptInvitation(page, args.totpInvitation, "Tom Totp");
  await signInWithPassword(page, "totp.browser@example.org");
  await page.waitForURL(/\/account\/enrol$/);
  await page.getByRole("link", { name: "Set up an authenticator app" }).click();
  await page.waitForURL(/\/account\/enrol\/totp$/);
  check(await page.locator(".cv-qr svg").isVisible(), "the QR code is shown");
  await page.screenshot({ path: `${args.screenshots}/enrol-totp.png`, fullPage: true });
  const secret = await page.locator("#totp-secret").getAttribute("data-secret");
  check(secret && secret.length >= 16, "the secret is shown for manual entry");
  // The previous step's code (accepted, ±1 step) leaves the current one for signing in.
  await page.getByLabel("Code from the app").fill(totp(secret, (await settledStep()) - 1));
  await page.getByRole("button", { name: "Confirm" }).click();
  await page.locator("#recovery-codes li").first().waitFor();
  await page.getByRole("link", { name: "I have saved my codes" }).click();
  await page.waitForURL(`${args.base}/`);
  await signOut(page);

  // A password alone reaches no patient data, by page or by API.
  await signInWithPassword(page, "totp.browser@example.org");
  await page.waitForURL(/\/signin\/second-factor$/);
  let read = await patientStatus(page);
  check(read.status === 401 && !read.body.includes(args.family), "a password alone reaches no patient data");
  for (const path of ["/", "/account", "/break-glass", `/patients/${args.patient}/entry`]) {
    await page.goto(`${args.base}${path}`);
    check(page.url().endsWith("/signin/second-factor"), `${path} sends a password-only session to the second factor`);
    check(!(await page.content()).includes(args.family), `${path} shows no patient data`);
  }
  const code = totp(secret, await settledStep());
  await page.getByLabel("Code from your authenticator app").fill(code);
  await page.getByRole("button", { name: "Continue" }).click();
  await page.waitForURL(`${args.base}/`);
  read = await patientStatus(page);
  check(read.status === 200, `password and TOTP read the record (got ${read.status})`);
  await signOut(page);

  // The same code again is refused, with an error summary linking to the field.
  await signInWithPassword(page, "totp.browser@example.org");
  await page.waitForURL(/\/signin\/second-factor$/);
  await page.getByLabel("Code from your authenticator app").fill(code);
  await page.getByRole("button", { name: "Continue" }).click();
  await page.locator(".nhsuk-error-summary").waitFor();
  check(page.url().endsWith("/signin/second-factor"), "a replayed code does not sign in");
  check(await page.locator('.nhsuk-error-summary a[href="#code"]').isVisible(), "the error summary links to the field");
  check((await page.title()).startsWith("Error: "), "the title says there is an error");
  read = await patientStatus(page);
  check(read.status === 401, "a replayed code reaches no data");
  await page.context().close();
  console.log("totp: enrolled, signed in, password alone reaches nothing, replay refused");
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
});
const violations = [];
let failed = false;
try {
  mkdirSync(args.screenshots, { recursive: true });
  await passkeyFlow(browser, violations);
  await totpFlow(browser, violations);
  check(violations.length === 0, `the pages broke their Content-Security-Policy or threw: ${violations.join("; ")}`);
} catch (error) {
  failed = true;
  console.error(`browser test failed: ${error.stack || error}`);
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
