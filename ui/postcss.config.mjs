// Tailwind CSS v4 runs as a PostCSS plugin inside `next build`.
const config = { plugins: { "@tailwindcss/postcss": {} } };
export default config;
